"""``geocells synth``: generate a synthetic dataset, or ``geocells synth preview`` one."""

from __future__ import annotations

import argparse
from pathlib import Path

from geocells.commands.options import accept_overrides_anywhere, add_progress_argument
from geocells.commands.validate import positive_int

HELP = "generate a synthetic dataset (procedural world), or preview a dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``synth [--config P] --out DIR [key=value ...]`` or ``synth preview DATASET --out PNG``."""
    parser.usage = (
        "geocells synth [--config PRESET] --out DATASET [--overwrite] [key=value ...]\n"
        "       geocells synth preview DATASET --out preview.png [--rows N]\n"
        "       geocells synth places DATASET --out places.png [--rows N]"
    )
    parser.add_argument(
        "items",
        nargs="*",
        metavar="key=value | preview|places DATASET",
        help="config overrides (e.g. seed=3 size_km=5 n_train=2000), or 'preview DATASET' (aerial"
        " tiles with views inside) or 'places DATASET' (one place, two headings, both campaigns)",
    )
    parser.add_argument(
        "--config",
        "--preset",
        dest="preset",
        default="demo",
        metavar="PRESET",
        help="synth preset: tiny, demo, large (default demo) or a YAML file",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (or preview PNG)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a different dataset in --out"
    )
    parser.add_argument(
        "--rows", type=positive_int, default=6, help="preview: number of aerial tiles"
    )
    add_progress_argument(parser)
    accept_overrides_anywhere(parser)


def main(args: argparse.Namespace) -> int:
    """Run the synth stage or the preview."""
    if args.items and args.items[0] in ("preview", "places"):
        from geocells.synth.preview import places, preview

        if len(args.items) != 2:
            raise ValueError(f"usage: geocells synth {args.items[0]} DATASET --out sheet.png")
        sheet = preview if args.items[0] == "preview" else places
        out = sheet(Path(args.items[1]), args.out, rows=args.rows)
        print(out)
        return 0
    from geocells.config import load_preset, resolve_config
    from geocells.synth import SynthConfig, run

    overrides = [*args.items, *args.overrides]
    cfg = resolve_config(SynthConfig, load_preset(args.preset, "synth"), overrides)
    out = run(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(out)
    return 0
