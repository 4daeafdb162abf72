"""Inputs and outputs of ``geocells locate``: finding images, and JSON / CSV / GeoJSON of
``ImageResult`` records (the same bodies ``POST /locate`` answers; docs/results.md)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geocells.data.files import not_regular_reason, special_file
from geocells.locate.record import ImageResult, exif_position
from geocells.scoring.confidence import aspect_ratios

if TYPE_CHECKING:
    from geocells.locate.localizer import Localizer

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"
)  # fmt: skip
FORMATS = ("json", "csv", "geojson")
CSV_COLUMNS = (
    "index", "image", "rank", "lat", "lon", "token", "score", "confidence",
    "exif_lat", "exif_lon", "error_m", "polygon", "error",
)  # fmt: skip

Failures = list[tuple[str, str]]


def find_images(inputs: Sequence[str | Path]) -> tuple[list[Path], Failures]:
    """Files as given, plus the candidate images under folders (recursive, sorted).

    In a folder a file is a candidate when its suffix is an image suffix or it has no
    suffix at all (decoding decides); hidden files and other suffixes (``notes.txt``) are
    left out. Broken symbolic links, missing inputs and paths that are no regular file (a
    FIFO named ``x.jpg`` would hang the reader) are failures with their reason, never
    dropped.
    """
    paths: list[Path] = []
    failures: Failures = []
    for item in map(Path, inputs):
        if item.is_dir():
            found, problems = _folder_images(item)
            failures.extend(problems)
            if not found and not problems:
                log.warning("locate: no images in folder %s", item)
            paths.extend(found)
        elif special_file(item) is not None:
            failures.append((str(item), not_regular_reason(special_file(item))))
        elif item.exists():
            paths.append(item)
        elif item.is_symlink():
            failures.append((str(item), "broken symbolic link"))
        else:
            failures.append((str(item), "no such file or folder"))
    return paths, failures


def _folder_images(folder: Path) -> tuple[list[Path], Failures]:
    """(candidate image files, [(path, reason)] for broken symbolic links and candidates that
    are no regular file) below ``folder``, sorted."""
    found, problems = [], []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        candidate = path.suffix.lower() in (*IMAGE_SUFFIXES, "")
        if path.is_symlink() and not path.exists():
            problems.append((str(path), "broken symbolic link"))
        elif path.is_file() and candidate:
            found.append(path)
        elif candidate and special_file(path) is not None:
            problems.append((str(path), not_regular_reason(special_file(path))))
    return found, problems


def locate_files(
    localizer: Localizer,
    paths: Sequence[Path],
    top_k: int,
    progress: bool = True,
    chunk: int = 1024,
    panorama: bool = False,
    missing: Failures = (),
) -> list[ImageResult]:
    """One ``ImageResult`` per path, in order (``chunk`` files embedded at a time), then one
    per ``missing`` input (from ``find_images``); unreadable files carry their reason.
    ``panorama``: every file is a north-aligned equirectangular panorama."""
    from tqdm import tqdm

    results: list[ImageResult] = []
    bar = tqdm(total=len(paths), unit="img", desc="locate", disable=None if progress else True)
    for start in range(0, len(paths), chunk):
        part = list(paths[start : start + chunk])
        fov = np.full(len(part), 360.0 if panorama else np.nan)
        embedded = localizer.model.ground.embed_files(
            part,
            localizer.batch_size,
            desc="locate",
            fov=fov,
            heading=np.zeros(len(part)),
            extra=None if panorama else aspect_ratios,
        )
        reasons = dict(embedded.failures)
        found = len(embedded.kept) > 0
        ranked = iter(localizer.search(embedded.embeddings, top_k, embedded.extra) if found else [])
        for i, path in enumerate(part):
            index = start + i
            if i in reasons:
                results.append(ImageResult(index, str(path), error=reasons[i]))
                continue
            position = exif_position(path) or (None, None)
            results.append(ImageResult(index, str(path), next(ranked), None, *position))
        bar.update(len(part))
    bar.close()
    for image, reason in missing:
        results.append(ImageResult(len(results), image, error=reason))
    return results


def to_json(results: Sequence[ImageResult], top_k: int) -> dict[str, Any]:
    """``{"top_k", "located", "failed", "results": [ImageResult.to_dict(), ...]}``."""
    failed = sum(not result.ok for result in results)
    return {
        "top_k": top_k,
        "located": len(results) - failed,
        "failed": failed,
        "results": [result.to_dict() for result in results],
    }


def to_geojson(results: Sequence[ImageResult], top_k: int) -> dict[str, Any]:
    """A FeatureCollection: per prediction a Point (``kind: "prediction"``) and its cell's
    Polygon (``kind: "cell"``), both with the flat record as properties; a failed image is
    a Feature without geometry (``kind: "failure"``) carrying its ``error``."""
    features = []
    for result in results:
        image = {k: v for k, v in result.to_dict(polygon=False).items() if k != "predictions"}
        if not result.ok:
            properties = {**image, "kind": "failure"}
            features.append({"type": "Feature", "geometry": None, "properties": properties})
        for prediction in result.predictions:
            properties = {**image, **prediction.to_dict(polygon=False)}
            point = {"type": "Point", "coordinates": [prediction.lon, prediction.lat]}
            for kind, geometry in (("prediction", point), ("cell", prediction.polygon)):
                feature = {"type": "Feature", "geometry": geometry}
                features.append({**feature, "properties": {**properties, "kind": kind}})
    failed = sum(not result.ok for result in results)
    return {
        "type": "FeatureCollection",
        "top_k": top_k,
        "located": len(results) - failed,
        "failed": failed,
        "features": features,
    }


def to_csv(results: Sequence[ImageResult]) -> str:
    """One row per (image, rank) with ``CSV_COLUMNS`` (the cell polygon as WKT); a failed
    image is one row with its ``index``, ``image`` and ``error``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        image = {"index": result.index, "image": result.image}
        image.update(exif_lat=_number(result.exif_lat, 7), exif_lon=_number(result.exif_lon, 7))
        if not result.ok:
            writer.writerow({**image, "error": result.error})
        for p in result.predictions:
            ring = p.polygon["coordinates"][0]
            wkt = "POLYGON((" + ", ".join(f"{lon:.7f} {lat:.7f}" for lon, lat in ring) + "))"
            writer.writerow(
                {
                    **image,
                    "rank": p.rank,
                    "lat": f"{p.lat:.7f}",
                    "lon": f"{p.lon:.7f}",
                    "token": p.token,
                    "score": f"{p.score:.6f}",
                    "confidence": _number(p.confidence, 4),
                    "error_m": _number(p.error_m, 1),
                    "polygon": wkt,
                }
            )
    return buffer.getvalue()


def _number(value: float | None, digits: int) -> str:
    """A fixed-point number; '' for None or NaN."""
    return "" if value is None or value != value else f"{value:.{digits}f}"


def render(results: Sequence[ImageResult], fmt: str, top_k: int) -> str:
    """The text of ``results`` in ``fmt`` (json | csv | geojson)."""
    if fmt == "json":
        return json.dumps(to_json(results, top_k), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(results)
    if fmt == "geojson":
        return json.dumps(to_geojson(results, top_k)) + "\n"
    raise ValueError(f"unknown output format {fmt!r}; valid: {', '.join(FORMATS)}")
