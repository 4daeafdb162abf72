"""Inputs and outputs of ``geocells locate``: finding images, and JSON / CSV / GeoJSON."""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geocells.data.files import not_regular_reason, special_file
from geocells.geo import cell_vertices, token_to_cell

if TYPE_CHECKING:
    from geocells.locate.localizer import Localizer, Prediction

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"
)  # fmt: skip
FORMATS = ("json", "csv", "geojson")

Results = list[tuple[str, list["Prediction"]]]
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
) -> tuple[Results, Failures]:
    """Locate every readable image (``chunk`` files embedded at a time); unreadable ones
    are returned with their reason, in input order. ``panorama``: every file is a
    north-aligned equirectangular panorama (``Localizer.embed``)."""
    from tqdm import tqdm

    results: Results = []
    failures: Failures = []
    bar = tqdm(total=len(paths), unit="img", desc="locate", disable=None if progress else True)
    for start in range(0, len(paths), chunk):
        part = list(paths[start : start + chunk])
        fov = np.full(len(part), 360.0 if panorama else np.nan)
        embedded = localizer.model.ground.embed_files(
            part, localizer.batch_size, desc="locate", fov=fov, heading=np.zeros(len(part))
        )
        failures.extend((str(part[i]), reason) for i, reason in embedded.failures)
        if len(embedded.kept):
            predictions = localizer.search(embedded.embeddings, top_k)
            results.extend(zip((str(part[i]) for i in embedded.kept), predictions))
        bar.update(len(part))
    bar.close()
    return results, failures


def to_json(results: Results, failures: Failures) -> str:
    """``{"results": [{"image", "predictions": [...]}], "failures": [{"image", "error"}]}``."""
    data = {
        "results": [
            {"image": image, "predictions": [p.to_dict() for p in predictions]}
            for image, predictions in results
        ],
        "failures": [{"image": image, "error": reason} for image, reason in failures],
    }
    return json.dumps(data, indent=2) + "\n"


def to_csv(results: Results, failures: Failures = ()) -> str:
    """One row per (image, rank): ``image,rank,lat,lon,token,score,confidence,error``;
    a failed image is one row with only ``image`` and ``error``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "rank", "lat", "lon", "token", "score", "confidence", "error"])
    for image, predictions in results:
        for rank, p in enumerate(predictions, start=1):
            writer.writerow(
                [
                    image,
                    rank,
                    f"{p.lat:.7f}",
                    f"{p.lon:.7f}",
                    p.token,
                    f"{p.score:.6f}",
                    "" if p.confidence != p.confidence else f"{p.confidence:.4f}",
                    "",
                ]
            )
    for image, reason in failures:
        writer.writerow([image, "", "", "", "", "", "", reason])
    return buffer.getvalue()


def to_geojson(results: Results, failures: Failures = ()) -> dict[str, Any]:
    """A FeatureCollection: a Point per prediction and the Polygon of each top-k cell; a
    failed image is a Feature without geometry, ``kind: "failure"`` and its ``error``."""
    import numpy as np

    features = []
    for image, predictions in results:
        if not predictions:
            continue
        corners = cell_vertices(token_to_cell(np.array([p.token for p in predictions])))
        for rank, (p, cell) in enumerate(zip(predictions, corners), start=1):
            properties = {"image": image, "rank": rank, **p.to_dict()}
            point = {"type": "Point", "coordinates": [p.lon, p.lat]}
            ring = [[float(lon), float(lat)] for lat, lon in cell] + [
                [float(cell[0, 1]), float(cell[0, 0])]
            ]
            if _signed_area(ring) < 0:  # RFC 7946: exterior rings counterclockwise
                ring.reverse()
            polygon = {"type": "Polygon", "coordinates": [ring]}
            features.append(
                {
                    "type": "Feature",
                    "geometry": point,
                    "properties": {**properties, "kind": "prediction"},
                }
            )
            features.append(
                {
                    "type": "Feature",
                    "geometry": polygon,
                    "properties": {**properties, "kind": "cell"},
                }
            )
    for image, reason in failures:
        properties = {"image": image, "kind": "failure", "error": reason}
        features.append({"type": "Feature", "geometry": None, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def _signed_area(ring: list[list[float]]) -> float:
    """Shoelace area of a closed (lon, lat) ring; positive when counterclockwise."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))


def render(results: Results, failures: Failures, fmt: str) -> str:
    """The text of ``results`` and ``failures`` in ``fmt`` (json | csv | geojson)."""
    if fmt == "json":
        return to_json(results, failures)
    if fmt == "csv":
        return to_csv(results, failures)
    if fmt == "geojson":
        return json.dumps(to_geojson(results, failures)) + "\n"
    raise ValueError(f"unknown output format {fmt!r}; valid: {', '.join(FORMATS)}")
