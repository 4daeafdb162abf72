"""Any CSV of geotagged images, with its columns mapped to manifest fields.

``--columns image=IMG_ID,lat=LAT,lon=LON,heading=yaw`` maps fields to CSV columns; a
``--preset`` gives a known dataset's mapping (``PRESETS``), which ``--columns`` can
override. Unmapped fields are looked up by usual names, case-insensitively (``AUTO``).
Fields: ``image`` (file path, relative to ``--images``, default the CSV's folder),
``lat``, ``lon`` (required); ``id`` (default: the image path), ``heading``, ``fov``,
``captured_at`` (kept as written), ``split`` (train/val/test; without it splits are drawn
by hash of the id). Columns that are none of these are ignored.

Presets (the published headers):
- ``mp16``: ``mp16_places365.csv`` of MP-16 (``IMG_ID, AUTHOR, LAT, LON, S3_Label, ...``;
  ``IMG_ID`` is the image's path below the MP-16 image folder);
- ``geoclip``: GeoCLIP's training CSV (``IMG_FILE, LAT, LON``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geocells.data.csvfile import read_csv, read_header
from geocells.data.importers.common import ImportRows, absolute_root, assign_splits

FIELDS = ("image", "id", "lat", "lon", "heading", "fov", "captured_at", "split")
REQUIRED = ("image", "lat", "lon")
PRESETS: dict[str, dict[str, str]] = {
    "mp16": {"image": "IMG_ID", "lat": "LAT", "lon": "LON"},
    "geoclip": {"image": "IMG_FILE", "lat": "LAT", "lon": "LON"},
}
AUTO: dict[str, tuple[str, ...]] = {
    "image": ("img_file", "img_id", "path", "image", "file", "filename", "img_path"),
    "id": ("image_id", "id"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "heading": ("heading", "compass_angle", "yaw", "bearing"),
    "fov": ("fov", "field_of_view"),
    "captured_at": ("captured_at", "timestamp", "datetime", "date_taken"),
    "split": ("split",),
}


def parse_columns(text: str | None) -> dict[str, str]:
    """``field=COLUMN,...`` -> {field: column}; unknown fields are an error."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        field, sep, column = part.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not column:
            raise ValueError(f"--columns: want field=COLUMN, got {part!r}")
        if field not in FIELDS:
            raise ValueError(f"--columns: unknown field {field!r}; valid: {', '.join(FIELDS)}")
        mapping[field] = column
    return mapping


def resolve_columns(
    names: list[str], preset: str | None, columns: dict[str, str], source: Path
) -> dict[str, str]:
    """{field: CSV column} from the preset, the explicit mapping and the usual names."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown CSV preset {preset!r}; valid: {', '.join(PRESETS)}")
    mapping = {**(PRESETS[preset] if preset else {}), **columns}
    missing = sorted(c for c in mapping.values() if c not in names)
    if missing:
        raise ValueError(f"{source} has no column(s) {missing} (has: {', '.join(names)})")
    lower = {n.lower(): n for n in names}
    taken = set(mapping.values())
    for field in FIELDS:
        if field in mapping:
            continue
        for candidate in AUTO[field]:
            if candidate in lower and lower[candidate] not in taken:
                mapping[field] = lower[candidate]
                taken.add(lower[candidate])
                break
    absent = [f for f in REQUIRED if f not in mapping]
    if absent:
        raise ValueError(
            f"{source}: no column for {', '.join(absent)} (has: {', '.join(names)}); map them "
            "with --columns image=COLUMN,lat=COLUMN,lon=COLUMN or a --preset "
            f"({', '.join(PRESETS)})"
        )
    return mapping


def _find_csv(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = sorted(path.glob("*.csv"))
    if len(found) != 1:
        raise ValueError(f"{path}: want exactly one .csv in the folder, found {len(found)}")
    return found[0]


def import_csv(
    csv_path: str | Path,
    images: str | Path | None = None,
    preset: str | None = None,
    columns: str | dict[str, str] | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> ImportRows:
    """A CSV of image paths and coordinates -> rows (see the module docstring)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    csv_path = _find_csv(absolute_root(csv_path, "CSV file"))
    base = absolute_root(images, "image folder") if images is not None else csv_path.parent
    explicit = parse_columns(columns) if isinstance(columns, str) or columns is None else columns
    header = read_header(csv_path)  # errors name the file, row and column (csvfile)
    mapping = resolve_columns(header, preset, explicit, csv_path)
    text_fields = [f for f in ("image", "id", "split", "captured_at") if f in mapping]
    types = {mapping[f]: "string" for f in text_fields}
    table = read_csv(csv_path, pacsv.ConvertOptions(column_types=types))

    def text(field: str) -> np.ndarray:
        values = pc.fill_null(pc.cast(table[mapping[field]], "string"), "")
        return np.array(values.to_pylist(), dtype=object)

    files = text("image")
    prefix = str(base) + os.sep
    paths = np.array(
        [f if os.path.isabs(f) else prefix + f if f else "" for f in files], dtype=object
    )
    ids = text("id") if "id" in mapping else files
    out = {"image_id": ids, "path": paths}
    for field, key in (("lat", "lat"), ("lon", "lon"), ("heading", "heading"), ("fov", "fov")):
        if field in mapping:
            out[key] = np.array(table[mapping[field]].to_pylist(), dtype=object)
    if "captured_at" in mapping:
        out["captured_at"] = text("captured_at")
    out["split"] = text("split") if "split" in mapping else assign_splits(ids, fractions)
    return ImportRows(out, [], None, f"CSV {csv_path.name}", (base,))
