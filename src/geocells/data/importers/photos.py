"""A folder of geotagged photos (any depth): position, heading and time from EXIF.

EXIF tags read (GPS IFD ``0x8825`` and Exif IFD ``0x8769``):

- ``GPSLatitude`` / ``GPSLatitudeRef`` (N/S), ``GPSLongitude`` / ``GPSLongitudeRef``
  (E/W): degrees, minutes, seconds rationals -> signed decimal degrees. A position with
  negative parts, minutes or seconds of 60 or more, or a reference other than N/S (E/W)
  is refused with its reason (a missing reference is taken as N or E);
- ``GPSImgDirection`` -> ``heading`` (degrees; true or magnetic north as
  ``GPSImgDirectionRef`` says: geocells takes it as given);
- ``DateTimeOriginal`` (+ ``OffsetTimeOriginal`` when present) -> ``captured_at`` (ISO 8601).

A photo without GPS position is reported (``ground/import_report.csv``), never dropped
silently, and so are files that are no regular file (a FIFO named ``x.jpg`` would hang the
import) and symbolically linked sub-folders (not followed: import the target folder itself,
or copy it in). ``.heic``/``.heif`` photos (iPhone) are read through ``pillow-heif``. The
image id is the path below the folder; splits are drawn by hash of it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from geocells.data.files import not_regular_reason, special_file
from geocells.data.images import register_heif
from geocells.data.importers.common import ImportRows, absolute_root, assign_splits

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff", ".png", ".webp", ".heic", ".heif")
GPS_IFD, EXIF_IFD = 0x8825, 0x8769
LAT_REF, LAT, LON_REF, LON, DIRECTION = 1, 2, 3, 4, 17
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 36867, 36881


def _degrees(value, name: str) -> float:
    """EXIF (degrees, minutes, seconds) rationals (or one number) -> decimal degrees;
    ValueError naming the tag when a part is negative or minutes/seconds are >= 60."""
    parts = [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"EXIF {name} has {len(parts)} parts, want degrees, minutes, seconds")
    parts += [0.0] * (3 - len(parts))
    degrees, minutes, seconds = parts
    if not all(map(math.isfinite, parts)) or min(parts) < 0:
        raise ValueError(f"EXIF {name} {value!r}: parts must be finite and not negative")
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"EXIF {name} {value!r}: minutes and seconds must be below 60")
    return degrees + minutes / 60.0 + seconds / 3600.0


def _sign(gps, tag: int, name: str, valid: str) -> float:
    """+1 or -1 from a GPS reference tag (``valid``: "NS" or "EW"; absent: +1)."""
    if tag not in gps:
        return 1.0
    ref = str(gps[tag]).strip().rstrip("\0").strip().upper()
    if ref not in valid:
        raise ValueError(f"EXIF {name} {gps[tag]!r} is none of {'/'.join(valid)}")
    return -1.0 if ref in "SW" else 1.0


def _iso(text, offset) -> str:
    """``YYYY:MM:DD HH:MM:SS`` (+ ``+HH:MM``) -> ISO 8601; '' when unusable."""
    text = str(text or "").strip().rstrip("\0")
    if len(text) < 19 or text[4] != ":" or text[7] != ":":
        return ""
    iso = f"{text[:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"
    offset = str(offset or "").strip().rstrip("\0")
    return iso + offset if len(offset) == 6 and offset[0] in "+-" else iso


def read_exif(path: str) -> tuple[float, float, float, str]:
    """(lat, lon, heading, captured_at) of one photo; NaN/'' where a tag is absent.

    Raises ValueError when the file has no readable GPS position (the reason says why).
    """
    kind = special_file(path)
    if kind is not None:
        raise ValueError(not_regular_reason(kind))
    register_heif()
    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"unreadable image ({err})") from None
    gps, details = exif.get_ifd(GPS_IFD), exif.get_ifd(EXIF_IFD)
    if LAT not in gps or LON not in gps:
        raise ValueError("no GPS position in EXIF (GPSLatitude/GPSLongitude)")
    try:
        lat, lon = _degrees(gps[LAT], "GPSLatitude"), _degrees(gps[LON], "GPSLongitude")
    except (TypeError, ZeroDivisionError):
        raise ValueError(f"unreadable EXIF GPS position {gps[LAT]!r}, {gps[LON]!r}") from None
    lat *= _sign(gps, LAT_REF, "GPSLatitudeRef", "NS")
    lon *= _sign(gps, LON_REF, "GPSLongitudeRef", "EW")
    try:
        heading = float(gps[DIRECTION]) if DIRECTION in gps else np.nan
    except (TypeError, ValueError, ZeroDivisionError):
        heading = np.nan
    taken = details.get(DATE_TIME_ORIGINAL) or exif.get(0x0132)  # DateTime as a fallback
    return lat, lon, heading, _iso(taken, details.get(OFFSET_TIME_ORIGINAL))


def import_photos(
    folder: str | Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> ImportRows:
    """Every photo below ``folder`` with an EXIF GPS position -> rows."""
    folder = absolute_root(folder, "photo folder")
    columns: dict[str, list] = {
        k: [] for k in ("image_id", "path", "lat", "lon", "heading", "captured_at")
    }
    skipped: list[tuple[str, str]] = []
    for directory, subfolders, files in os.walk(folder):
        subfolders.sort()
        for name in [n for n in subfolders if os.path.islink(os.path.join(directory, n))]:
            link = os.path.join(directory, name)
            target = os.path.realpath(link)
            reason = f"symbolic link to a folder ({target}): not followed; import that folder"
            skipped.append((link, reason + " itself, or copy it in"))
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in PHOTO_SUFFIXES:
                continue
            path = os.path.join(directory, name)
            try:
                lat, lon, heading, taken = read_exif(path)
            except ValueError as err:
                skipped.append((path, str(err)))
                continue
            values = (os.path.relpath(path, folder), path, lat, lon, heading, taken)
            for key, value in zip(columns, values):
                columns[key].append(value)
    if not columns["path"] and not skipped:
        raise FileNotFoundError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) below {folder}")
    arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
    for key in ("lat", "lon", "heading"):
        arrays[key] = arrays[key].astype(float)
    arrays["split"] = assign_splits(arrays["image_id"], fractions)
    return ImportRows(arrays, skipped, None, "photo folder", (folder,))
