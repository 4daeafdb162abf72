"""``geocells dataset check DATASET``: images, coverage and problems of a dataset folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geocells.commands.validate import positive_int

HELP = "inspect a dataset: images per split, ground/aerial coverage of the region, bad rows"


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None
    if not levels or any(not 0 <= level <= 30 for level in levels):
        raise argparse.ArgumentTypeError(f"S2 levels are 0..30, got {text!r}")
    return levels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``check DATASET [--json] [--strict] [--levels 15,16] [--fast | --images MODE]``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="print what the dataset holds and covers",
        epilog="Exit status: 0 when no PROBLEM line is printed, 1 when any is, 2 with "
        "--strict (or on a dataset that cannot be opened).",
    )
    check.add_argument("dataset", type=Path, help="dataset folder")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) on bad rows, unreadable images or a missing region/manifest/aerial",
    )
    check.add_argument(
        "--levels", type=_levels, default=(15, 16), help="S2 levels to report (default 15,16)"
    )
    check.add_argument(
        "--images",
        choices=("decode", "header", "off"),
        default=None,
        help="check images: full decode (default), header (what --fast does), or off",
    )
    check.add_argument(
        "--fast",
        action="store_true",
        help="check image headers and end markers only, without decoding (much faster)",
    )
    check.add_argument(
        "--image-sample",
        type=positive_int,
        default=100_000,
        help="check at most this many images, a fixed sample of larger sets (default 100000)",
    )


def main(args: argparse.Namespace) -> int:
    """Build and print the report."""
    from geocells.data.check import check_dataset, format_report
    from geocells.data.dataset import Dataset

    dataset = Dataset.open(args.dataset, strict=args.strict)
    images = args.images or ("header" if args.fast else "decode")
    report = check_dataset(dataset, args.levels, images, args.image_sample)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if not report["problems"]:
        return 0
    return 2 if args.strict else 1
