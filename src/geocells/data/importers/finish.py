"""The end of every import: validate, check images, fit the region, write atomically.

Order (nothing is written before every check has passed):

1. the rows are validated as a manifest (bad coordinates, duplicates...), rows whose image
   leads out of the folders the user gave are refused (``confine``: ``..``, absolute paths,
   symbolic links), then missing files;
2. every image is checked (``ImportOptions.check_images``; header by default);
3. ``--strict`` fails here when anything was skipped; an import with no row left fails;
4. the region is chosen (``--region``; a ``region.geojson`` of the user's kept; otherwise
   derived from the points, ``geocells.data.regionfit``). Its cells at ``cell_level`` are
   estimated from its area, never listed: a fitted region over ``DEFAULT_MAX_REGION_CELLS``
   is refused, a region the user chose is taken with a warning above it (``europe-west``,
   132 M level-16 cells, imports with the defaults), and an explicit ``max_region_cells``
   refuses any region over it;
5. all files (with ``ground/image_roots.txt``, the given folders the images stay in) are
   written into ``DATASET/.import-staging/`` and moved into place with
   ``os.replace``, the manifest last: a failed import leaves no manifest behind, so a rerun
   redoes it instead of saying "already imported".

Every skipped row, with its reason, goes to ``ground/import_report.csv`` (also when the
import fails: then the report alone is written, so the reasons are not lost).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from geocells.data.dataset import (
    AERIAL_DIR,
    IMAGE_ROOTS_FILE,
    MANIFEST_FILES,
    REGION_FILE,
    write_image_roots,
)
from geocells.data.files import missing_files, missing_reason
from geocells.data.images import ImageLoadError, check_image
from geocells.data.importers.common import (
    DEFAULT_MAX_REGION_CELLS,
    ImportOptions,
    ImportResult,
    ImportRows,
)
from geocells.data.importers.confine import escaping_rows
from geocells.data.manifest import GroundManifest

logger = logging.getLogger(__name__)

IMPORT_REGION_NAME = "geocells-import-region"  # marks a region an import derived
_OLD_REGION_NAMES = (IMPORT_REGION_NAME, "geocells-import-bbox")
REPORT_FILE = "ground/import_report.csv"
STAGING_DIR = ".import-staging"
TILESET_FILE = "tileset.json"
_LISTED = 20


def check_out(out: Path, overwrite: bool) -> bool:
    """True when ``out`` already holds a finished import (and ``overwrite`` is off)."""
    if (Path(out) / MANIFEST_FILES[0]).exists() and not overwrite:
        logger.info("%s already has a manifest; skipping (use --overwrite to redo)", out)
        return True
    return False


def finish_import(out: Path, rows: ImportRows, options: ImportOptions) -> ImportResult:
    """Validate ``rows``, check their images, choose the region and write the dataset."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)  # a crashed import's leftovers
    skipped = list(rows.skipped)
    manifest = GroundManifest.from_columns(out, strict=False, check_files=False, **rows.columns)
    skipped += [(b.image_id or f"row {b.row}", b.reason) for b in manifest.bad_rows]
    manifest, escaping = _confine(manifest, out, rows.roots)
    skipped += escaping
    manifest, missing = _missing(manifest)
    skipped += missing
    manifest, unreadable = _check_images(manifest, options)
    skipped += unreadable
    where = f"{rows.source} import into {out}"
    if options.strict and skipped:
        _fail(out, skipped, f"{where}: --strict and {len(skipped)} row(s) would be skipped")
    if len(manifest) == 0:
        _fail(out, skipped, f"{where}: nothing to import, every row was skipped")
    region, cells = _choose_region(out, manifest, options)
    staging = out / STAGING_DIR
    (staging / "ground").mkdir(parents=True)
    manifest.write(staging / MANIFEST_FILES[0], relative_to=out / "ground")
    # Images stay where they are: declare the folders the user gave that hold some, the
    # only ones outside the dataset its manifest may point into (geocells.data.dataset).
    write_image_roots(staging / IMAGE_ROOTS_FILE, _used_roots(manifest, out, rows.roots), out)
    _write_report(staging / REPORT_FILE, skipped)
    if region is not None:
        region.to_geojson(staging / REGION_FILE)
    aerial = _stage_aerial(out, staging, rows.aerial)
    _commit(out, staging, region is not None, aerial)
    for item, reason in skipped[:10]:
        logger.warning("skipped %s: %s", item, reason)
    if len(skipped) > 10:
        logger.warning("... and %d more skipped (all in %s)", len(skipped) - 10, REPORT_FILE)
    name = region.name if region is not None else "kept"
    return ImportResult(out, manifest.counts(), skipped, name, cells, out / REPORT_FILE)


def _confine(manifest: GroundManifest, out: Path, roots: tuple[Path, ...]):
    """(manifest without rows leading out of ``out`` and ``roots``, [(image_id, reason)])."""
    given = " and ".join(str(folder) for folder in (*roots, out))
    bad = escaping_rows(manifest.path.tolist(), [out, *roots], f"the folders given ({given})")
    keep = np.ones(len(manifest), dtype=bool)
    keep[[index for index, _ in bad]] = False
    return manifest.take(keep), [(str(manifest.image_id[i]), why) for i, why in bad]


def _missing(manifest: GroundManifest):
    """(manifest without rows whose image file does not exist, [(image_id, reason)])."""
    missing = missing_files(manifest.path)
    found = [
        (str(manifest.image_id[i]), missing_reason(manifest.path[i]))
        for i in np.flatnonzero(missing)
    ]
    return manifest.take(~missing), found


def _used_roots(manifest: GroundManifest, out: Path, roots: tuple[Path, ...]) -> list[Path]:
    """The given ``roots`` outside ``out`` that hold some image of ``manifest``."""
    inside_out = str(out).rstrip(os.sep) + os.sep
    outside = [path for path in manifest.path.tolist() if not path.startswith(inside_out)]
    used = []
    for root in roots:
        prefix = os.path.normpath(os.path.abspath(root)).rstrip(os.sep) + os.sep
        if any(path.startswith(prefix) for path in outside):
            used.append(Path(prefix.rstrip(os.sep) or os.sep))
    return used


def _check_images(manifest: GroundManifest, options: ImportOptions):
    """(manifest without unreadable images, [(image_id, reason)])."""
    if options.check_images == "off" or len(manifest) == 0:
        return manifest, []

    def problem(path: str) -> str | None:
        try:
            check_image(path, options.check_images)
        except ImageLoadError as err:
            return err.reason
        return None

    from tqdm import tqdm

    with ThreadPoolExecutor(max(options.workers, 1)) as pool:
        checks = pool.map(problem, manifest.path.tolist(), chunksize=256)
        disable = None if options.progress else True  # None: off unless stderr is a terminal
        bar = tqdm(checks, total=len(manifest), desc="check images", unit="img", disable=disable)
        problems = list(bar)
    bad = np.array([p is not None for p in problems], dtype=bool)
    found = [(str(manifest.image_id[i]), f"image: {problems[i]}") for i in np.flatnonzero(bad)]
    return manifest.take(~bad), found


def _fail(out: Path, skipped: list[tuple[str, str]], message: str) -> None:
    """Write only the report (the reasons are kept) and raise."""
    report = out / REPORT_FILE
    _write_report(report, skipped)
    listed = "\n  ".join(f"{item}: {reason}" for item, reason in skipped[:_LISTED])
    more = f"\n  ... and {len(skipped) - _LISTED} more" if len(skipped) > _LISTED else ""
    raise ValueError(f"{message}; nothing imported (all reasons in {report}):\n  {listed}{more}")


def _write_report(path: Path, skipped: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "reason"])
        writer.writerows(skipped)


def replaceable_region(path: Path) -> bool:
    """True when there is no region yet, or only one an earlier import derived."""
    if not path.exists():
        return True
    try:
        features = json.loads(path.read_text()).get("features", [])
        return features[0]["properties"]["name"] in _OLD_REGION_NAMES
    except (ValueError, LookupError, TypeError, AttributeError):
        return False  # someone else's region file: keep it


def _choose_region(out: Path, manifest: GroundManifest, options: ImportOptions):
    """(region to write or None to keep the user's, estimated cells) — guard applied."""
    from geocells.data import regionfit
    from geocells.geo.region import Region

    ceiling = options.max_region_cells
    if options.region is not None:
        region, write = Region.parse(options.region), True
        area, perimeter = region.area_km2(), regionfit.perimeter_km(region)
    elif not replaceable_region(out / REGION_FILE):
        region, write = Region.from_geojson(out / REGION_FILE), False
        area, perimeter = region.area_km2(), regionfit.perimeter_km(region)
        logger.info("keeping the region of your own in %s", out / REGION_FILE)
    else:
        ceiling = ceiling or DEFAULT_MAX_REGION_CELLS
        limit = ceiling * regionfit.mean_cell_area_km2(options.cell_level)
        try:
            cover = regionfit.cover_points(
                manifest.lat, manifest.lon, options.region_pad_m, max_area_km2=limit
            )
            area = cover.area_km2()
        except regionfit.RegionTooLarge as err:
            area = err.area_km2  # a lower bound: covering stopped there
        region, write, perimeter = None, True, 0.0
    cells = regionfit.estimate_cells(area, options.cell_level, perimeter)
    if ceiling is not None and cells > ceiling:
        raise ValueError(
            f"the region would hold at least {cells:,} level-{options.cell_level} cells "
            f"({area:,.0f} km²), more than --max-region-cells {ceiling:,} "
            "fit in memory; nothing imported. Restrict it: --region FILE.geojson or "
            "bbox:south,west,north,east, a smaller --region-pad-m, fewer cities or rows "
            "(filter the source), or raise --max-region-cells on a machine with more memory"
        )
    if ceiling is None and cells > DEFAULT_MAX_REGION_CELLS:
        logger.warning(
            "the region holds about %s level-%d cells (%s km²): more than one machine holds "
            "in memory (~%s M); the import does not need them, but train and index such a "
            "region on a bigger machine, or build its database in shards (index --shard i/n) "
            "and search it with Milvus (docs/scaling.md)",
            f"{cells:,}", options.cell_level, f"{area:,.0f}", DEFAULT_MAX_REGION_CELLS // 10**6,
        )  # fmt: skip
    if region is None:
        region = regionfit.region_from_cover(cover, IMPORT_REGION_NAME)
        cells = regionfit.estimate_cells(area, options.cell_level, regionfit.perimeter_km(region))
    return (region if write else None), cells


def _stage_aerial(out: Path, staging: Path, aerial: dict | None) -> bool:
    """Stage the importer's aerial source unless ``aerial/`` holds imagery of the user's."""
    if aerial is None:
        return False
    folder = out / AERIAL_DIR
    others = [p.name for p in folder.iterdir() if p.name != TILESET_FILE] if folder.is_dir() else []
    if others:
        logger.warning("keeping your aerial imagery in %s (not writing %s)", folder, TILESET_FILE)
        return False
    tiles = [
        {**tile, "path": os.path.relpath(tile["path"], folder)} for tile in aerial.get("tiles", [])
    ]
    (staging / AERIAL_DIR).mkdir(parents=True, exist_ok=True)
    head = json.dumps({k: v for k, v in aerial.items() if k != "tiles"})[:-1]
    text = head + ', "tiles": [\n' + ",\n".join(json.dumps(t) for t in tiles) + "\n]}\n"
    (staging / AERIAL_DIR / TILESET_FILE).write_text(text)
    return True


def _commit(out: Path, staging: Path, region: bool, aerial: bool) -> None:
    """Move the staged files into place; the manifest goes last (it marks "imported")."""
    moves = [REPORT_FILE, IMAGE_ROOTS_FILE]
    if region:
        moves.insert(0, REGION_FILE)
    if aerial:
        moves.insert(0, f"{AERIAL_DIR}/{TILESET_FILE}")
    for name in [*moves, MANIFEST_FILES[0]]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out / name)
    stale_csv = out / MANIFEST_FILES[1]
    if stale_csv.exists():  # Dataset prefers Parquet, but a stale CSV would confuse people
        logger.warning("%s is older than the new %s; remove it", stale_csv, MANIFEST_FILES[0])
    shutil.rmtree(staging, ignore_errors=True)
