"""Importers: public ground-image datasets -> a geocells dataset folder (manifest + region).

Images stay where they are; the manifest points at them by paths relative to
``DATASET/ground/``. The region written is the bounding box of the imported points, padded
by ``REGION_PAD_M`` (a ``region.geojson`` of your own is kept; one an earlier import
derived is replaced). Aerial imagery is not part
of these sources' ground sets: put GeoTIFFs, an XYZ folder or MBTiles in ``DATASET/aerial``.

Sources and the layouts assumed:
- VIGOR (Zhu et al., CVPR 2021): ``ROOT/<City>/panorama/<panoid>,<lat>,<lon>,.jpg``
  (also ``ROOT/panorama/...``). Satellite images ``satellite_<lat>_<lon>.png`` are
  counted but not imported: they are separate centred chips, not a georeferenced mosaic.
  ``cross_area`` puts NewYork and Seattle in train (+val) and Chicago and SanFrancisco in
  test, as VIGOR's cross-area protocol; otherwise splits are drawn by hash of the id.
- generic CSV ``IMG_FILE,LAT,LON`` (MP-16 as used by GeoCLIP; column names are matched
  case-insensitively, ``latitude``/``longitude``/``path`` accepted, an optional ``split``
  column is kept); image files are relative to ``images`` (default: the CSV's folder).
- OSV-5M: ``ROOT/train.csv``, ``ROOT/test.csv`` (``id, latitude, longitude, ...,
  captured_at, ...``) with images ``ROOT/images/{train,test}/**/<id>.jpg`` (the zip shards
  extract into numbered sub-folders; any depth is searched). Val is drawn from train.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geocells.data.dataset import MANIFEST_FILES, REGION_FILE
from geocells.data.manifest import GroundManifest

logger = logging.getLogger(__name__)

REGION_PAD_M = 500.0
IMPORT_REGION_NAME = "geocells-import-bbox"  # marks a region an import derived
VIGOR_TRAIN_CITIES = ("NewYork", "Seattle")
VIGOR_TEST_CITIES = ("Chicago", "SanFrancisco")
_VIGOR_PANORAMA = re.compile(r"^(?P<id>[^,]+),(?P<lat>[^,]+),(?P<lon>[^,]+),.*\.(jpe?g|png)$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class ImportResult:
    """What an import wrote and what it skipped (source item, reason)."""

    dataset: Path
    counts: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def hash_fraction(ids: Iterable[str]) -> np.ndarray:
    """A stable number in [0, 1) per id (SHA-1 based; independent of order and machine)."""
    values = [int.from_bytes(hashlib.sha1(str(i).encode()).digest()[:8], "big") for i in ids]
    return np.array(values, dtype=np.float64) / 2.0**64


def assign_splits(ids: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Deterministic train/val/test per id from its hash; ``fractions`` sum to 1."""
    train, val, test = fractions
    if min(fractions) < 0 or abs(train + val + test - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    draw = hash_fraction(ids)
    return np.where(draw < train, "train", np.where(draw < train + val, "val", "test")).astype(
        object
    )


def carve_val(ids: np.ndarray, splits: np.ndarray, val_fraction: float) -> np.ndarray:
    """Move a deterministic ``val_fraction`` of the train rows to val (by hash of id)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    splits = splits.astype(object).copy()
    splits[(splits == "train") & (hash_fraction(ids) < val_fraction)] = "val"
    return splits


def write_import(
    out: Path,
    image_id: np.ndarray,
    path: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    split: np.ndarray,
    skipped: list[tuple[str, str]],
    **optional: np.ndarray,
) -> ImportResult:
    """Validate (bad rows skipped and reported), write the manifest and the region."""
    ground = out / MANIFEST_FILES[0]
    manifest = GroundManifest.from_columns(
        out, strict=False, image_id=image_id, path=path, lat=lat, lon=lon, split=split, **optional
    )
    skipped = skipped + [(f"row {b.row} ({b.image_id})", b.reason) for b in manifest.bad_rows]
    if len(manifest) == 0:
        raise ValueError(f"nothing to import into {out}: no valid images found")
    manifest.write(ground)
    if _replaceable_region(out / REGION_FILE):
        write_bbox_region(out / REGION_FILE, manifest.lat, manifest.lon)
    for item, reason in skipped[:10]:
        logger.warning("skipped %s: %s", item, reason)
    if len(skipped) > 10:
        logger.warning("... and %d more skipped", len(skipped) - 10)
    return ImportResult(out, manifest.counts(), skipped)


def _replaceable_region(path: Path) -> bool:
    """True when there is no region yet, or only one an earlier import derived (stale)."""
    if not path.exists():
        return True
    try:
        features = json.loads(path.read_text()).get("features", [])
        return features[0]["properties"]["name"] == IMPORT_REGION_NAME
    except (ValueError, LookupError, TypeError, AttributeError):
        return False  # someone else's region file: keep it


def write_bbox_region(path: Path, lat: np.ndarray, lon: np.ndarray) -> None:
    """Write the points' bounding box padded by ``REGION_PAD_M`` as ``region.geojson``."""
    from geocells.data.aerial.base import metres_per_degree
    from geocells.geo.region import Region

    metres_lat, metres_lon = metres_per_degree(float(np.median(lat)))
    pad_lat, pad_lon = REGION_PAD_M / metres_lat, REGION_PAD_M / metres_lon
    south, north = max(lat.min() - pad_lat, -85.0), min(lat.max() + pad_lat, 85.0)
    west, east = max(lon.min() - pad_lon, -180.0), min(lon.max() + pad_lon, 180.0)
    region = Region.from_bbox(south, west, north, east)
    region.name = IMPORT_REGION_NAME
    region.to_geojson(path)


def check_out(out: Path, overwrite: bool) -> bool:
    """True when ``out`` already holds an import (and ``overwrite`` is off): skip the work."""
    if (out / MANIFEST_FILES[0]).exists() and not overwrite:
        logger.info("%s already has a manifest; skipping (use --overwrite to redo)", out)
        return True
    return False


def import_vigor(
    root: Path,
    out: Path,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    cross_area: bool = False,
    val_fraction: float = 0.1,
) -> ImportResult:
    """VIGOR panoramas -> manifest (see the module docstring for layout and splits)."""
    root = Path(root)
    folders = sorted(root.glob("*/panorama")) or sorted(root.glob("panorama"))
    if not folders:
        raise FileNotFoundError(f"no VIGOR panorama folder under {root} (want <City>/panorama/)")
    ids, paths, lats, lons, cities, skipped = [], [], [], [], [], []
    satellites = 0
    for folder in folders:
        city = folder.parent.name
        satellites += sum(1 for _ in (folder.parent / "satellite").glob("satellite_*_*.*"))
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            match = _VIGOR_PANORAMA.match(entry.name)
            if not match:
                skipped.append((entry.path, "name is not <panoid>,<lat>,<lon>,.jpg"))
                continue
            ids.append(f"{city}/{match['id']}")
            paths.append(entry.path)
            lats.append(match["lat"])
            lons.append(match["lon"])
            cities.append(city)
    if satellites:
        logger.info("VIGOR: %d satellite chips not imported (not a mosaic)", satellites)
    ids = np.array(ids, dtype=object)
    if cross_area:
        cities = np.array(cities, dtype=object)
        known = np.isin(cities, VIGOR_TRAIN_CITIES + VIGOR_TEST_CITIES)
        for city in sorted(set(cities[~known])):
            skipped.append((city, "city is in neither VIGOR cross-area train nor test"))
        splits = np.where(np.isin(cities, VIGOR_TRAIN_CITIES), "train", "test").astype(object)
        splits = carve_val(ids, splits, val_fraction)
        keep = known
    else:
        splits, keep = assign_splits(ids, fractions), np.ones(len(ids), dtype=bool)
    columns = [np.array(c, dtype=object)[keep] for c in (ids, paths, lats, lons)]
    return write_import(out, *columns, splits[keep], skipped)


def _pick_column(names: list[str], wanted: tuple[str, ...], what: str, source: Path) -> str:
    lower = {n.lower(): n for n in names}
    for candidate in wanted:
        if candidate in lower:
            return lower[candidate]
    raise ValueError(f"{source} has no {what} column (looked for {', '.join(wanted)})")


def import_csv(
    csv_path: Path,
    out: Path,
    images: Path | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> ImportResult:
    """A generic ``IMG_FILE,LAT,LON`` CSV (MP-16 / GeoCLIP style) -> manifest."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    csv_path = Path(csv_path)
    if csv_path.is_dir():
        found = sorted(csv_path.glob("*.csv"))
        if len(found) != 1:
            raise ValueError(f"{csv_path}: want exactly one .csv in the folder, found {len(found)}")
        csv_path = found[0]
    images = Path(images) if images is not None else csv_path.parent
    table = pacsv.read_csv(csv_path)
    names = table.column_names
    file_column = _pick_column(names, ("img_file", "path", "image", "file"), "image file", csv_path)
    lat_column = _pick_column(names, ("lat", "latitude"), "latitude", csv_path)
    lon_column = _pick_column(names, ("lon", "lng", "longitude"), "longitude", csv_path)
    files = np.array(pc.cast(table[file_column], "string").to_pylist(), dtype=object)
    split_names = [n for n in names if n.lower() == "split"]
    if split_names:
        splits = np.array(pc.cast(table[split_names[0]], "string").to_pylist(), dtype=object)
    else:
        splits = assign_splits(files, fractions)
    base = os.path.abspath(images)
    paths = np.array([os.path.join(base, f) if f else "" for f in files], dtype=object)
    lat, lon = table[lat_column].to_pylist(), table[lon_column].to_pylist()
    return write_import(out, files, paths, np.array(lat), np.array(lon), splits, [])


def _index_images(folder: Path) -> dict[str, str]:
    """Image stem -> path for every image below ``folder`` (any depth)."""
    found: dict[str, str] = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in _IMAGE_SUFFIXES:
                found.setdefault(stem, os.path.join(directory, name))
    return found


def _iso_time(values: list) -> list[str | None]:
    """OSV-5M ``captured_at`` (epoch milliseconds) -> ISO 8601 UTC; text is kept."""
    from datetime import UTC, datetime

    out = []
    for value in values:
        if value is None or value == "":
            out.append(None)
        elif isinstance(value, (int, float)) or str(value).isdigit():
            out.append(datetime.fromtimestamp(float(value) / 1000.0, tz=UTC).isoformat())
        else:
            out.append(str(value))
    return out


def import_osv5m(root: Path, out: Path, val_fraction: float = 0.1) -> ImportResult:
    """OSV-5M ``train.csv``/``test.csv`` + ``images/{split}/**/<id>.jpg`` -> manifest."""
    import pyarrow.csv as pacsv

    root = Path(root)
    columns: dict[str, list] = {"image_id": [], "path": [], "lat": [], "lon": [], "split": []}
    captured: list = []
    skipped: list[tuple[str, str]] = []
    for split in ("train", "test"):
        csv_path = root / f"{split}.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"OSV-5M {split}.csv not found in {root}")
        options = pacsv.ConvertOptions(column_types={"id": "string"})
        table = pacsv.read_csv(csv_path, convert_options=options)
        for name in ("id", "latitude", "longitude"):
            if name not in table.column_names:
                raise ValueError(f"{csv_path} has no {name!r} column")
        images = _index_images(root / "images" / split)
        ids = table["id"].to_pylist()
        paths = [images.get(i, "") for i in ids]
        skipped += [(f"{split}/{i}", "image file not found") for i, p in zip(ids, paths) if not p]
        keep = [bool(p) for p in paths]
        columns["image_id"] += [i for i, k in zip(ids, keep) if k]
        columns["path"] += [p for p in paths if p]
        for key, name in (("lat", "latitude"), ("lon", "longitude")):
            columns[key] += [v for v, k in zip(table[name].to_pylist(), keep) if k]
        columns["split"] += [split] * sum(keep)
        if "captured_at" in table.column_names:
            captured += [v for v, k in zip(table["captured_at"].to_pylist(), keep) if k]
        else:
            captured += [None] * sum(keep)
    arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
    arrays["split"] = carve_val(arrays["image_id"], arrays["split"], val_fraction)
    extra = {"captured_at": np.array(_iso_time(captured), dtype=object)}
    lat, lon = arrays["lat"].astype(float), arrays["lon"].astype(float)
    return write_import(
        out, arrays["image_id"], arrays["path"], lat, lon, arrays["split"], skipped, **extra
    )
