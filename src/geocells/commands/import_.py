"""``geocells import {vigor,osv5m,csv,msls,photos} ROOT --out DATASET``: a dataset as
distributed -> a geocells dataset folder (formats: docs/datasets.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from geocells.commands.validate import cell_level, positive_int

HELP = "import a dataset as distributed (VIGOR, OSV-5M, CSV/MP-16, MSLS, EXIF photo folder)"
SOURCES = ("vigor", "osv5m", "csv", "msls", "photos")


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not three numbers: {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"want TRAIN,VAL,TEST fractions, got {text!r}")
    return values  # type: ignore[return-value]


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Source kind, source root, output dataset, shared and per-format options."""
    parser.add_argument("source", choices=SOURCES, help="source format")
    parser.add_argument(
        "root",
        type=Path,
        help="VIGOR root, OSV-5M root, the CSV file (or its folder), MSLS root, photo folder",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    parser.add_argument("--overwrite", action="store_true", help="redo an existing import")
    shared = parser.add_argument_group("all formats")
    shared.add_argument(
        "--strict", action="store_true", help="fail, writing nothing, if any row is skipped"
    )
    shared.add_argument(
        "--check-images",
        choices=("header", "decode", "off"),
        default="header",
        help="check every image at import: header (default), full decode, or off",
    )
    shared.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar over the image check (off anyway when stderr is not a terminal)",
    )
    shared.add_argument(
        "--region", help="region to write: preset, .geojson or bbox:S,W,N,E (default: fit)"
    )
    shared.add_argument(
        "--region-pad-m",
        type=float,
        default=500.0,
        help="fitted region: distance kept around every image (default 500 m)",
    )
    shared.add_argument(
        "--cell-level",
        type=cell_level,
        default=16,
        help="level the memory guard counts (default 16)",
    )
    shared.add_argument(
        "--max-region-cells",
        type=positive_int,
        default=30_000_000,
        help="refuse a region with more cells than this at --cell-level (default 30 M)",
    )
    shared.add_argument(
        "--split-fractions",
        type=_fractions,
        default=(0.8, 0.1, 0.1),
        metavar="TRAIN,VAL,TEST",
        help="hash-of-id split for sources without splits (default 0.8,0.1,0.1)",
    )
    shared.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train moved to val for sources with train/test only (default 0.1)",
    )
    vigor = parser.add_argument_group("vigor")
    vigor.add_argument(
        "--protocol",
        choices=("same-area", "cross-area", "hash"),
        default="same-area",
        help="official split files to follow (default same-area)",
    )
    vigor.add_argument("--cross-area", action="store_true", help="same as --protocol cross-area")
    vigor.add_argument("--splits", type=Path, help="split folder (default ROOT/splits)")
    vigor.add_argument("--cities", type=_names, help="only these cities (comma-separated)")
    vigor.add_argument(
        "--no-aerial", action="store_true", help="do not use the satellite tiles as aerial/"
    )
    table = parser.add_argument_group("csv")
    table.add_argument("--images", type=Path, help="folder the image paths are relative to")
    table.add_argument("--preset", choices=("mp16", "geoclip"), help="known column mapping")
    table.add_argument(
        "--columns", help="field=COLUMN,... for image, id, lat, lon, heading, fov, ..."
    )
    msls = parser.add_argument_group("msls")
    msls.add_argument(
        "--val-cities", type=_names, default=("cph", "sf"), help="default cph,sf (MSLS val)"
    )
    msls.add_argument(
        "--test-cities", type=_names, default=(), help="train_val cities to test (default: none)"
    )


def _source_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of the chosen importer."""
    if args.source == "vigor":
        return {
            "protocol": "cross-area" if args.cross_area else args.protocol,
            "splits": args.splits,
            "val_fraction": args.val_fraction,
            "fractions": args.split_fractions,
            "cities": args.cities,
            "aerial": not args.no_aerial,
        }
    if args.source == "osv5m":
        return {"val_fraction": args.val_fraction}
    if args.source == "csv":
        return {
            "images": args.images,
            "preset": args.preset,
            "columns": args.columns,
            "fractions": args.split_fractions,
        }
    if args.source == "msls":
        return {"val_cities": args.val_cities, "test_cities": args.test_cities}
    return {"fractions": args.split_fractions}


def main(args: argparse.Namespace) -> int:
    """Run the importer and print what was written."""
    from geocells.data import importers

    options = importers.ImportOptions(
        strict=args.strict,
        check_images=args.check_images,
        region=args.region,
        region_pad_m=args.region_pad_m,
        cell_level=args.cell_level,
        max_region_cells=args.max_region_cells,
        progress=not args.no_progress,
    )
    out = args.out.expanduser().resolve()
    result = importers.run(
        args.source, args.root, out, options, args.overwrite, **_source_options(args)
    )
    if result is None:
        print(f"{out}: already imported (use --overwrite to redo)")
        return 0
    counts = ", ".join(f"{split} {count}" for split, count in result.counts.items())
    print(
        f"imported into {out}: {counts}; {len(result.skipped)} skipped "
        f"(reasons in {result.report}); region {result.region}, "
        f"~{result.region_cells:,} level-{args.cell_level} cells"
    )
    return 0
