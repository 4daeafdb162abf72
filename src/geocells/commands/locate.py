"""``geocells locate``: where were these photos taken?"""

from __future__ import annotations

import argparse
import sys

from geocells.commands.options import add_progress_argument
from geocells.commands.validate import DEVICE_HELP, device, non_negative_int, positive_int
from geocells.search.refine import WARM_MODES

HELP = "locate photos (files or folders) in a database: top-k cells with confidence"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geocells locate``."""
    parser.epilog = (
        "Exit status: 0 when every image was located; 1 when any image failed (each failure "
        "is in the output, in every --format, and on standard error); 2 on bad arguments or "
        "an unusable database."
    )
    parser.add_argument("db", help="database folder built by `geocells index`")
    parser.add_argument("images", nargs="+", help="image files and/or folders (walked recursively)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="candidates per image")
    parser.add_argument(
        "--format",
        default="json",
        choices=("json", "csv", "geojson"),
        help="result record of docs/results.md (default: json)",
    )
    parser.add_argument("--out", help="write here instead of standard output")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="images per encoder call (default: 32 on the CPU, 256 on CUDA)",
    )
    parser.add_argument(
        "--device", type=device, default="auto", help=f"{DEVICE_HELP} (default: auto)"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "exact", "ivfpq"),
        help="search backend (auto: the saved IVF-PQ index if any, else exact up to 200k cells)",
    )
    parser.add_argument(
        "--warm",
        default="query",
        choices=WARM_MODES,
        help="how a saved IVF-PQ index's refine file enters the page cache (default: query, "
        "each search prefetches the rows it needs; load reads the whole file first, worth it "
        "past ~20,000 images on a large database; auto: load when it fits in half the free "
        "memory)",
    )
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's choice)"
    )
    add_progress_argument(parser)
    parser.add_argument(
        "--panorama",
        action="store_true",
        help="the images are north-aligned equirectangular panoramas (2:1): each is located "
        "from the mean of its 4 level 90° crops",
    )


def main(args: argparse.Namespace) -> int:
    """Locate every readable image; exit 1 if any image failed."""
    import torch

    from geocells.io import write_text
    from geocells.locate import Localizer
    from geocells.locate.formats import find_images, locate_files, render

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    localizer = Localizer.load(
        args.db,
        backend=args.backend,
        device=args.device,
        batch_size=args.batch_size or 0,
        warm=args.warm,
    )
    paths, missing = find_images(args.images)
    results = locate_files(
        localizer,
        paths,
        args.top_k,
        progress=not args.no_progress,
        panorama=args.panorama,
        missing=missing,
    )
    text = render(results, args.format, args.top_k)
    if args.out:
        write_text(args.out, text)  # atomic: a failed write keeps the previous results
    else:
        sys.stdout.write(text)
    failures = [result for result in results if not result.ok]
    for result in failures:
        print(f"geocells locate: {result.image}: {result.error}", file=sys.stderr)
    if failures:
        print(f"geocells locate: {len(failures)} of {len(results)} images failed", file=sys.stderr)
    return 1 if failures else 0
