"""``geocells import {vigor,csv,osv5m} ROOT --out DATASET``: ground images -> a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "import a public ground-image dataset (VIGOR, IMG_FILE/LAT/LON CSV, OSV-5M)"


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not three numbers: {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"want TRAIN,VAL,TEST fractions, got {text!r}")
    return values  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Source kind, source root, output dataset and split options."""
    parser.add_argument("source", choices=["vigor", "csv", "osv5m"], help="source format")
    parser.add_argument(
        "root",
        type=Path,
        help="VIGOR root (<City>/panorama/...), the CSV file (or its folder), or OSV-5M root",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    parser.add_argument(
        "--split-fractions",
        type=_fractions,
        default=(0.8, 0.1, 0.1),
        metavar="TRAIN,VAL,TEST",
        help="hash-of-id split for sources without splits (default 0.8,0.1,0.1)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train moved to val for sources with train/test only (default 0.1)",
    )
    parser.add_argument("--images", type=Path, help="csv: folder the IMG_FILE paths are in")
    parser.add_argument(
        "--cross-area",
        action="store_true",
        help="vigor: cross-area protocol (NewYork, Seattle train; Chicago, SanFrancisco test)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo an existing import")


def main(args: argparse.Namespace) -> int:
    """Run the importer and print what was written."""
    from geocells.data import importers

    out = args.out.expanduser().resolve()
    if importers.check_out(out, args.overwrite):
        print(f"{out}: already imported (use --overwrite to redo)")
        return 0
    if args.source == "vigor":
        result = importers.import_vigor(
            args.root, out, args.split_fractions, args.cross_area, args.val_fraction
        )
    elif args.source == "csv":
        result = importers.import_csv(args.root, out, args.images, args.split_fractions)
    else:
        result = importers.import_osv5m(args.root, out, args.val_fraction)
    counts = ", ".join(f"{split} {count}" for split, count in result.counts.items())
    print(f"imported into {out}: {counts}; {len(result.skipped)} skipped")
    return 0
