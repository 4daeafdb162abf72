"""Mapillary Street-level Sequences (MSLS, Warburg et al., CVPR 2020).

Layout: ``ROOT/train_val/<city>/{query,database}/raw.csv`` with the header
``,key,lon,lat,ca,captured_at,pano`` (a leading unnamed index column) and images
``.../{query,database}/images/<key>.jpg``; ``ROOT/test/<city>/...`` likewise (MSLS's test
cities come without coordinates, so only test cities that do have a ``raw.csv`` are read;
every city folder and role without one is listed in the import report). Both query and
database images are imported, the manifest's ``role`` column saying which each row was.
``ca`` (Mapillary's compass angle, degrees clockwise from north) becomes ``heading``;
``pano = True`` rows become ``fov = 360`` (panoramas); ``captured_at`` (epoch
milliseconds) becomes ISO 8601 UTC. Splits by city: MSLS's validation cities (``cph``,
``sf``) are val, the other ``train_val`` cities train, ``test/`` cities and any named in
``test_cities`` test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geocells.data.csvfile import read_csv
from geocells.data.importers.common import ImportRows, absolute_root, iso_time

VAL_CITIES = ("cph", "sf")
ROLES = ("query", "database")
COLUMNS = ("key", "lon", "lat", "ca", "captured_at", "pano")
FIELDS = ("image_id", "path", "lat", "lon", "heading", "fov", "split", "role", "captured_at")


def _raw_files(root: Path, skipped: list[tuple[str, str]]) -> list[tuple[str, str, str, Path]]:
    """(split folder, city, role, raw.csv) for every city and role under ``root``; a city
    folder's role without its ``raw.csv`` goes to ``skipped``."""
    found = []
    for part in ("train_val", "test"):
        for city in sorted(p for p in (root / part).glob("*") if p.is_dir()):
            for role in ROLES:
                if (city / role / "raw.csv").is_file():
                    found.append((part, city.name, role, city / role / "raw.csv"))
                    continue
                why = " (MSLS's test cities come without coordinates)" if part == "test" else ""
                skipped.append((f"{part}/{city.name}/{role}", f"no {role}/raw.csv{why}"))
    return found


def _read_raw(path: Path) -> dict[str, list]:
    import pyarrow.csv as pacsv

    types = {"key": "string", "captured_at": "string", "pano": "string"}
    table = read_csv(path, pacsv.ConvertOptions(column_types=types))  # names row and column
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path} lacks MSLS column(s) {missing} (has {table.column_names}); want "
            "',key,lon,lat,ca,captured_at,pano'"
        )
    return {name: table[name].to_pylist() for name in COLUMNS}


def _with_times(rows: dict[str, list], prefix: str, where, skipped: list) -> dict[str, list]:
    """``captured_at`` as ISO 8601; rows whose time no calendar holds go to ``skipped``."""
    bad: list[tuple[int, str]] = []
    rows["captured_at"] = iso_time(rows["captured_at"], bad).tolist()
    skipped += [(f"{prefix}{rows['key'][r]}", f"{where} row {r + 1}: {why}") for r, why in bad]
    drop = {row for row, _ in bad}
    return {
        name: [v for r, v in enumerate(values) if r not in drop] for name, values in rows.items()
    }


def import_msls(
    root: str | Path,
    val_cities: tuple[str, ...] = VAL_CITIES,
    test_cities: tuple[str, ...] = (),
) -> ImportRows:
    """MSLS ``raw.csv`` files + images -> rows (see the module docstring)."""
    root = absolute_root(root, "MSLS root")
    skipped: list[tuple[str, str]] = []
    files = _raw_files(root, skipped)
    if not files:
        raise FileNotFoundError(
            f"no MSLS raw.csv under {root} (want train_val/<city>/{{query,database}}/raw.csv)"
        )
    columns: dict[str, list] = {k: [] for k in FIELDS}
    for part, city, role, raw in files:
        split = (
            "test"
            if part == "test" or city in test_cities
            else "val"
            if city in val_cities
            else "train"
        )
        rows = _with_times(_read_raw(raw), f"{city}/", raw.relative_to(root), skipped)
        images = raw.parent / "images"
        keys = rows["key"]
        columns["image_id"] += [f"{city}/{k}" for k in keys]
        columns["path"] += [str(images / f"{k}.jpg") if k else "" for k in keys]
        columns["lat"] += rows["lat"]
        columns["lon"] += rows["lon"]
        columns["heading"] += rows["ca"]  # text that is no number: reported per row
        panorama = [str(v).strip().lower() == "true" for v in rows["pano"]]
        columns["fov"] += [360.0 if p else np.nan for p in panorama]
        columns["split"] += [split] * len(keys)
        columns["role"] += [role] * len(keys)
        columns["captured_at"] += rows["captured_at"]
    arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
    arrays["fov"] = arrays["fov"].astype(float)
    return ImportRows(arrays, skipped, None, "MSLS", (root,))
