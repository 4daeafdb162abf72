"""``geocells import {vigor,osv5m,csv,msls,photos} ROOT --out DATASET``: a dataset as
distributed -> a geocells dataset folder (formats: docs/datasets.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from geocells.commands.validate import cell_level, positive_int
from geocells.geo import DEFAULT_CELL_LEVEL

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
        default=DEFAULT_CELL_LEVEL,
        help=f"level the memory guard counts (default {DEFAULT_CELL_LEVEL})",
    )
    shared.add_argument(
        "--max-region-cells",
        type=positive_int,
        default=None,
        help="refuse any region with more cells than this at --cell-level (default: a region "
        "fitted to the images is refused above 30 M, one given with --region is accepted)",
    )
    # Options of some formats only: not given -> absent (SUPPRESS), so that one given to a
    # format it does not belong to is refused instead of ignored (_check_options).
    unset = argparse.SUPPRESS
    some = parser.add_argument_group("some formats (refused by the others)")
    some.add_argument(
        "--split-fractions",
        type=_fractions,
        default=unset,
        metavar="TRAIN,VAL,TEST",
        help="vigor (--protocol hash), csv, photos: hash-of-id split (default 0.8,0.1,0.1)",
    )
    some.add_argument(
        "--val-fraction",
        type=float,
        default=unset,
        help="vigor, osv5m: share of train moved to val (default 0.1)",
    )
    vigor = parser.add_argument_group("vigor")
    vigor.add_argument(
        "--protocol",
        choices=("same-area", "cross-area", "hash"),
        default=unset,
        help="official split files to follow (default same-area)",
    )
    vigor.add_argument(
        "--cross-area", action="store_true", default=unset, help="same as --protocol cross-area"
    )
    vigor.add_argument("--splits", type=Path, default=unset, help="split folder (ROOT/splits)")
    vigor.add_argument(
        "--cities", type=_names, default=unset, help="only these cities (comma-separated)"
    )
    vigor.add_argument(
        "--no-aerial",
        action="store_true",
        default=unset,
        help="do not use the satellite tiles as aerial/",
    )
    table = parser.add_argument_group("csv")
    table.add_argument(
        "--images", type=Path, default=unset, help="folder the image paths are relative to"
    )
    table.add_argument(
        "--preset", choices=("mp16", "geoclip"), default=unset, help="known column mapping"
    )
    table.add_argument(
        "--columns", default=unset, help="field=COLUMN,... for image, id, lat, lon, heading, ..."
    )
    msls = parser.add_argument_group("msls")
    msls.add_argument(
        "--val-cities", type=_names, default=unset, help="MSLS val cities (default cph,sf)"
    )
    msls.add_argument(
        "--test-cities", type=_names, default=unset, help="train_val cities to test (none)"
    )


# Which formats take each format-specific option (the argparse dest), and its default.
OPTION_FORMATS: dict[str, tuple[tuple[str, ...], object]] = {
    "split_fractions": (("vigor", "csv", "photos"), (0.8, 0.1, 0.1)),
    "val_fraction": (("vigor", "osv5m"), 0.1),
    "protocol": (("vigor",), "same-area"),
    "cross_area": (("vigor",), False),
    "splits": (("vigor",), None),
    "cities": (("vigor",), None),
    "no_aerial": (("vigor",), False),
    "images": (("csv",), None),
    "preset": (("csv",), None),
    "columns": (("csv",), None),
    "val_cities": (("msls",), ("cph", "sf")),
    "test_cities": (("msls",), ()),
}


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options of other formats (``--cities`` on ``import csv``), naming each."""
    foreign = [
        f"--{name.replace('_', '-')} ({'/'.join(formats)} only)"
        for name, (formats, _) in OPTION_FORMATS.items()
        if hasattr(args, name) and args.source not in formats
    ]
    if foreign:
        raise ValueError(
            f"not options of `import {args.source}`: {', '.join(foreign)}; see "
            "geocells import --help"
        )
    for name, (_, default) in OPTION_FORMATS.items():
        if not hasattr(args, name):
            setattr(args, name, default)


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

    _check_options(args)
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
        options, args.source, args.root, out, overwrite=args.overwrite, **_source_options(args)
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
