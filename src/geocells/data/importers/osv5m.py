"""OSV-5M (Astruc et al., CVPR 2024) as downloaded from Hugging Face (``osv5m/osv5m``).

Layout: ``ROOT/train.csv`` and/or ``ROOT/test.csv`` (``id, latitude, longitude, ...,
captured_at, ...``), images in ``ROOT/images/{train,test}/NN.zip`` shards. Images are
read straight from the shards (manifest paths ``images/train/00.zip!/<member>``); shards
that were extracted in place (the project's download script does that) work too, as do
both mixed. An image is found by its file stem ``<id>`` at any depth. Either CSV may be
missing (a test-only download imports the test split alone). ``captured_at`` (epoch
milliseconds) becomes ISO 8601 UTC. A zip member whose name has a ``..`` part or is an
absolute path is refused and reported (``confine``). OSV-5M has no val split:
``val_fraction`` of train goes to val by hash of the id.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from geocells.data.csvfile import read_csv
from geocells.data.images import archive_path
from geocells.data.importers.common import ImportRows, absolute_root, carve_val, iso_time
from geocells.data.importers.confine import unsafe_member

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SPLITS = ("train", "test")


def index_images(folder: Path, skipped: list[tuple[str, str]]) -> dict[str, str]:
    """Image stem -> path (or ``ARCHIVE.zip!/MEMBER``) for every image below ``folder``."""
    found: dict[str, str] = {}
    for directory, subfolders, files in os.walk(folder):
        for name in sorted(n for n in subfolders if os.path.islink(os.path.join(directory, n))):
            link = os.path.join(directory, name)
            reason = f"symbolic link to a folder ({os.path.realpath(link)}): not followed"
            skipped.append((link, reason + "; give the folder it points to as the root"))
        for name in sorted(files):
            path = os.path.join(directory, name)
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(stem, path)
            elif suffix.lower() == ".zip":
                _index_zip(path, found, skipped)
    return found


def _index_zip(path: str, found: dict[str, str], skipped: list[tuple[str, str]]) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as err:
        skipped.append((path, f"unreadable zip shard ({err})"))
        return
    for member in names:
        stem, suffix = os.path.splitext(os.path.basename(member))
        if suffix.lower() not in IMAGE_SUFFIXES:
            continue
        unsafe = unsafe_member(member)
        if unsafe:  # "00/../../../usr/share/x.png" would point out of the dataset
            skipped.append((archive_path(path, member), f"zip member name {unsafe}: refused"))
        else:
            found.setdefault(stem, archive_path(path, member))


def _read_split(root: Path, split: str, skipped: list[tuple[str, str]]) -> dict[str, list]:
    import pyarrow.csv as pacsv

    csv_path = root / f"{split}.csv"
    options = pacsv.ConvertOptions(column_types={"id": "string", "captured_at": "string"})
    table = read_csv(csv_path, options)  # errors name the file, row and column
    for name in ("id", "latitude", "longitude"):
        if name not in table.column_names:
            raise ValueError(f"{csv_path} has no {name!r} column (has {table.column_names})")
    images = index_images(root / "images" / split, skipped)
    if not images:
        logger.warning("OSV-5M: no images (files or zip shards) under %s", root / "images" / split)
    ids = table["id"].to_pylist()
    paths = [images.get(i or "", "") for i in ids]
    keep = [bool(p) for p in paths]
    where = f"images/{split}/ (folders or zip shards)"
    skipped += [(f"{split}/{i}", f"image not found in {where}") for i, k in zip(ids, keep) if not k]
    captured = (
        table["captured_at"].to_pylist()
        if "captured_at" in table.column_names
        else [None] * len(ids)
    )
    bad_times: list[tuple[int, str]] = []
    captured = iso_time(captured, bad_times).tolist()
    for row, reason in bad_times:
        if keep[row]:
            keep[row] = False
            skipped.append((f"{split}/{ids[row]}", f"{csv_path.name} row {row + 1}: {reason}"))
    rows = {
        "image_id": ids,
        "path": paths,
        "lat": table["latitude"].to_pylist(),
        "lon": table["longitude"].to_pylist(),
        "captured_at": captured,
    }
    rows = {key: [v for v, k in zip(values, keep) if k] for key, values in rows.items()}
    rows["split"] = [split] * sum(keep)
    return rows


def import_osv5m(root: str | Path, val_fraction: float = 0.1) -> ImportRows:
    """OSV-5M CSVs + images (zip shards or folders) -> rows (see the module docstring)."""
    root = absolute_root(root, "OSV-5M root")
    present = [split for split in SPLITS if (root / f"{split}.csv").is_file()]
    if not present:
        raise FileNotFoundError(f"OSV-5M: neither train.csv nor test.csv found in {root}")
    skipped: list[tuple[str, str]] = []
    columns: dict[str, list] = {}
    for split in present:
        for key, values in _read_split(root, split, skipped).items():
            columns.setdefault(key, []).extend(values)
    arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
    arrays["lat"] = np.array([np.nan if v is None else v for v in columns["lat"]], float)
    arrays["lon"] = np.array([np.nan if v is None else v for v in columns["lon"]], float)
    arrays["split"] = carve_val(arrays["image_id"], arrays["split"], val_fraction)
    arrays["captured_at"] = np.array(columns["captured_at"], dtype=object)
    return ImportRows(arrays, skipped, None, "OSV-5M", (root,))
