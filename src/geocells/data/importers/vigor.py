"""VIGOR (Zhu et al., CVPR 2021): panoramas, official splits and satellite tiles.

Layouts (both found automatically):

- original: ``ROOT/<City>/panorama/<panoid>,<lat>,<lon>,.jpg`` and
  ``ROOT/<City>/satellite/satellite_<lat>_<lon>.png``;
- Sample4Geo's reorganised copy: ``ROOT/ground/<City>/...jpg`` and
  ``ROOT/satellite/<City>/...png``.

Split files: ``ROOT/splits/<City>/`` (or ``splits__corrected/``, the SliceMatch labels,
whose files end in ``__corrected.txt``), or ``--splits DIR``. Each line of
``same_area_balanced_{train,test}.txt`` and ``pano_label_balanced.txt`` has 13 fields: the
panorama name, then 4 x (satellite name, delta row, delta column). Protocols:

- ``same-area``: train = ``same_area_balanced_train`` of every city, test =
  ``same_area_balanced_test``;
- ``cross-area``: train = ``pano_label_balanced`` of NewYork and Seattle, test = that of
  Chicago and SanFrancisco (VIGOR §5, the cities of VIGOR's and Sample4Geo's loaders);
- ``hash``: no split files; splits drawn from a hash of the panorama id.

VIGOR has no val split: ``val_fraction`` of train goes to val by hash of the id. Panoramas
are rows with ``fov = 360`` and ``heading = 0``: VIGOR's panoramas are north-aligned
(VIGOR issue #4) with north at the centre column (CCVPE's VIGOR loader: an unrolled
panorama "means heading North"). The satellite images are Google Maps zoom-20 tiles,
north-up, centred on the coordinates in their names; their ground size is
``width x 156543.03392 cos(lat) / 2**20`` m (the per-city resolutions SliceMatch measured,
e.g. 0.111262 m/px for Chicago, are this formula at each city's latitude). They become the
dataset's aerial source: a centred tile set (``geocells.data.aerial.tileset``).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from geocells.data.importers.common import (
    ImportRows,
    absolute_root,
    assign_splits,
    carve_val,
)

PROTOCOLS = ("same-area", "cross-area", "hash")
TRAIN_CITIES = ("NewYork", "Seattle")
TEST_CITIES = ("Chicago", "SanFrancisco")
SPLIT_FIELDS = 13
ZOOM = 20
_WEB_MERCATOR_M_PER_PX_Z0 = 2 * math.pi * 6378137.0 / 256  # 156543.03392 m at the equator
_PANORAMA = re.compile(r"^(?P<id>[^,]+),(?P<lat>[^,]+),(?P<lon>[^,]+),.*\.(jpe?g|png)$", re.I)
_SATELLITE = re.compile(r"^satellite_(?P<lat>[-+0-9.eE]+)_(?P<lon>[-+0-9.eE]+)\.(png|jpe?g)$")


def find_cities(root: Path) -> dict[str, tuple[Path, Path]]:
    """City -> (panorama folder, satellite folder), in either layout."""
    original = {p.parent.name: (p, p.parent / "satellite") for p in root.glob("*/panorama")}
    if original:
        return dict(sorted(original.items()))
    if (root / "panorama").is_dir():  # one city on its own
        return {root.name: (root / "panorama", root / "satellite")}
    reorganised = {
        p.name: (p, root / "satellite" / p.name) for p in (root / "ground").glob("*") if p.is_dir()
    }
    if reorganised:
        return dict(sorted(reorganised.items()))
    raise FileNotFoundError(
        f"no VIGOR panorama folder under {root} (want <City>/panorama/ or ground/<City>/)"
    )


def find_splits(root: Path, splits: Path | None) -> Path | None:
    """The split folder: ``splits`` given, else ``ROOT/splits`` or ``ROOT/splits__corrected``."""
    if splits is not None:
        splits = absolute_root(splits, "VIGOR split folder")
        return splits
    for name in ("splits", "splits__corrected"):
        if (root / name).is_dir():
            return root / name
    return None


def _split_file(folder: Path, city: str, stem: str) -> Path:
    for name in (f"{stem}.txt", f"{stem}__corrected.txt"):
        if (folder / city / name).is_file():
            return folder / city / name
    raise FileNotFoundError(
        f"VIGOR split file {folder / city / (stem + '.txt')} not found (the official "
        "splits come with VIGOR as splits.zip; or use --protocol hash)"
    )


def read_split_file(path: Path, skipped: list[tuple[str, str]]) -> list[str]:
    """Panorama names listed in a split file (lines without 13 fields are reported)."""
    names = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != SPLIT_FIELDS:
                reason = f"{len(fields)} fields, {SPLIT_FIELDS} expected"
                skipped.append((f"{path} line {number}", reason))
                continue
            names.append(fields[0])
    return names


def official_splits(
    folder: Path, cities: list[str], protocol: str, skipped: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(city, panorama file name) -> train/test for the protocol."""
    wanted: list[tuple[str, str, str]] = []  # city, file stem, split
    if protocol == "same-area":
        for city in cities:
            wanted += [(city, "same_area_balanced_train", "train")]
            wanted += [(city, "same_area_balanced_test", "test")]
    else:
        for city in cities:
            if city in TRAIN_CITIES + TEST_CITIES:
                split = "train" if city in TRAIN_CITIES else "test"
                wanted.append((city, "pano_label_balanced", split))
    assigned: dict[tuple[str, str], str] = {}
    for city, stem, split in wanted:
        for name in read_split_file(_split_file(folder, city, stem), skipped):
            assigned.setdefault((city, name), split)
    return assigned


def satellite_tiles(cities: dict[str, tuple[Path, Path]], skipped) -> list[dict]:
    """Tile records (absolute path, centre, ground size) of every city's satellite folder."""
    from PIL import Image

    tiles = []
    for _, folder in cities.values():
        entries = sorted(os.scandir(folder), key=lambda e: e.name) if folder.is_dir() else []
        width = None
        for entry in entries:
            match = _SATELLITE.match(entry.name)
            if not match:
                skipped.append((entry.path, "not a satellite_<lat>_<lon>.png tile"))
                continue
            if width is None:  # VIGOR's tiles of a city share one size (640 px)
                with Image.open(entry.path) as image:
                    width = image.size[0]
            lat, lon = float(match["lat"]), float(match["lon"])
            metres_per_px = _WEB_MERCATOR_M_PER_PX_Z0 * math.cos(math.radians(lat)) / 2**ZOOM
            tiles.append(
                {"path": entry.path, "lat": lat, "lon": lon, "size_m": width * metres_per_px}
            )
    return tiles


def _panoramas(found, assigned, protocol: str, skipped) -> dict[str, list]:
    """Manifest columns of the panoramas on disk (``assigned``: their official splits,
    consumed; None for hash splits); names that do not parse or are unlisted are skipped."""
    columns: dict[str, list] = {k: [] for k in ("image_id", "path", "lat", "lon", "split")}
    for city, (panoramas, _) in found.items():
        for entry in sorted(os.scandir(panoramas), key=lambda e: e.name):
            match = _PANORAMA.match(entry.name)
            if not match:
                skipped.append((entry.path, "name is not <panoid>,<lat>,<lon>,.jpg"))
                continue
            split = "" if assigned is None else assigned.pop((city, entry.name), None)
            if split is None:
                skipped.append((entry.path, f"not in the {protocol} split files"))
                continue
            for key, value in zip(columns, (f"{city}/{match['id']}", entry.path)):
                columns[key].append(value)
            columns["lat"].append(match["lat"])
            columns["lon"].append(match["lon"])
            columns["split"].append(split)
    for city, name in assigned or {}:
        skipped.append((f"{city}/{name}", "listed in the split files, no such panorama"))
    return columns


def import_vigor(
    root: str | Path,
    protocol: str = "same-area",
    splits: str | Path | None = None,
    val_fraction: float = 0.1,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    cities: tuple[str, ...] | None = None,
    aerial: bool = True,
) -> ImportRows:
    """VIGOR panoramas (fov 360, heading 0) with the protocol's splits, + satellite tiles."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown VIGOR protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    root = absolute_root(root, "VIGOR root")
    found = find_cities(root)
    if cities:
        unknown = sorted(set(cities) - set(found))
        if unknown:
            raise ValueError(f"VIGOR cities {unknown} not under {root}; found: {sorted(found)}")
        found = {c: found[c] for c in found if c in cities}
    skipped: list[tuple[str, str]] = []
    assigned = None
    if protocol != "hash":
        folder = find_splits(root, Path(splits) if splits else None)
        if folder is None:
            raise FileNotFoundError(
                f"no VIGOR split folder (splits/ or splits__corrected/) under {root}; the "
                "official splits come with VIGOR as splits.zip (or use --protocol hash)"
            )
        assigned = official_splits(folder, list(found), protocol, skipped)
    columns = _panoramas(found, assigned, protocol, skipped)
    arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
    if protocol == "hash":
        arrays["split"] = assign_splits(arrays["image_id"], fractions)
    else:
        arrays["split"] = carve_val(arrays["image_id"], arrays["split"], val_fraction)
    arrays["heading"] = np.zeros(len(arrays["image_id"]))
    arrays["fov"] = np.full(len(arrays["image_id"]), 360.0)
    tileset = None
    if aerial:
        tiles = satellite_tiles(found, skipped)
        if tiles:
            tileset = {"kind": "centred-tiles", "version": 1, "tiles": tiles}
    return ImportRows(arrays, skipped, tileset, "VIGOR", (root,))
