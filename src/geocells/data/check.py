"""``dataset check``: what a dataset holds and how well ground and aerial cover its region.

The report (a JSON-able dict) has: images per split; bad manifest rows; for each cell
level, the cells with at least one train image and the images per covered cell; the
share of the region's cells without any train image; for val/test, the share of images
in cells that have train images; the share of ground images outside the region; the
share of region cell centres (prototype level) inside the aerial coverage; and the images
that fail a full decode (or, faster, a header) check (all of them, or a fixed sample of
``image_sample`` rows of a larger manifest).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from geocells.data.bad_rows import bad_row_kinds
from geocells.data.dataset import Dataset

logger = logging.getLogger(__name__)

# Above this many region cells at a level the exact uncovered share is skipped (memory).
MAX_REGION_CELLS = 10_000_000
DEFAULT_IMAGE_SAMPLE = 100_000
LISTED = 20  # problem rows kept in the report (the JSON); the text shows SHOWN of them
SHOWN = 10


def _geo():
    """The geo functions this report needs (imported on use: ``geocells.geo`` is numpy-only
    but not needed to import this module)."""
    from geocells.geo import cell_to_latlng, count_cells, latlng_to_cell, region_cells

    return latlng_to_cell, cell_to_latlng, count_cells, region_cells


def _cell_stats(lat: np.ndarray, lon: np.ndarray, level: int, region) -> dict[str, Any]:
    """Train-image coverage at one level (``region`` may be None)."""
    latlng_to_cell, _, count_cells, region_cells = _geo()
    cells, per_cell = np.unique(latlng_to_cell(lat, lon, level), return_counts=True)
    stats: dict[str, Any] = {
        "covered_cells": len(cells),
        "median_images_per_covered_cell": float(np.median(per_cell)) if len(cells) else 0.0,
        "mean_images_per_covered_cell": float(per_cell.mean()) if len(cells) else 0.0,
        "max_images_per_cell": int(per_cell.max()) if len(cells) else 0,
    }
    if region is not None:
        total = count_cells(region, level)
        stats["region_cells"] = int(total)
        if total <= MAX_REGION_CELLS:
            inside = np.isin(cells, region_cells(region, level)).sum()
            stats["region_cells_without_train_image"] = float(1.0 - inside / max(total, 1))
    return stats


def _covered_share(train_cells: np.ndarray, lat: np.ndarray, lon: np.ndarray, level: int):
    """Share of points in cells that hold train images (None without points)."""
    if len(lat) == 0:
        return None
    latlng_to_cell = _geo()[0]
    return float(np.isin(latlng_to_cell(lat, lon, level), train_cells).mean())


def check_images(manifest, mode: str = "decode", sample: int = DEFAULT_IMAGE_SAMPLE):
    """Images that fail ``check_image``: {mode, checked, of, unreadable, first}."""
    from concurrent.futures import ThreadPoolExecutor

    from geocells.data.images import ImageLoadError, check_image
    from geocells.data.panorama import check_panorama_size, is_panorama

    panorama = is_panorama(manifest.fov)
    rows = np.arange(len(manifest))
    if len(rows) > sample:  # a fixed, spread-out sample: the same rows every run
        rows = np.unique(np.linspace(0, len(rows) - 1, sample).round().astype(np.int64))

    def problem(i: int) -> str | None:
        try:
            size = check_image(manifest.path[i], mode)
            if panorama[i] and size is not None:  # fov = 360 rows must be 2:1
                check_panorama_size(*size, manifest.path[i])
        except ImageLoadError as err:
            return f"{manifest.image_id[i]}: {err.reason} ({manifest.path[i]})"
        return None

    with ThreadPoolExecutor(4) as pool:
        found = [p for p in pool.map(problem, rows.tolist(), chunksize=256) if p]
    return {
        "mode": mode,
        "checked": len(rows),
        "of": len(manifest),
        "unreadable": len(found),
        "first": found[:LISTED],
    }


def check_dataset(
    dataset: Dataset,
    levels: tuple[int, ...] = (15, 16),
    image_check: str = "decode",
    image_sample: int = DEFAULT_IMAGE_SAMPLE,
) -> dict[str, Any]:
    """Build the report (parts that are missing are reported as such, not raised);
    ``image_check`` is ``decode`` (full decode), ``header`` (faster) or ``off``."""
    report: dict[str, Any] = {"dataset": str(dataset.root), "problems": []}
    region = _load_part(dataset, "region", report)
    manifest = _load_part(dataset, "manifest", report)
    aerial = _load_part(dataset, "aerial", report)
    if manifest is not None:
        report["images"] = manifest.counts()
        report["bad_rows"] = {
            "count": len(manifest.bad_rows),
            "kinds": dict(bad_row_kinds(manifest.bad_rows).most_common()),
            "first": [str(b) for b in manifest.bad_rows[:LISTED]],
        }
        train = manifest.split("train")
        report["levels"] = {}
        latlng_to_cell = _geo()[0]
        for level in levels:
            stats = _cell_stats(train.lat, train.lon, level, region)
            train_cells = np.unique(latlng_to_cell(train.lat, train.lon, level))
            for split in ("val", "test"):
                part = manifest.split(split)
                stats[f"{split}_in_covered_cells"] = _covered_share(
                    train_cells, part.lat, part.lon, level
                )
            report["levels"][str(level)] = stats
        if region is not None and len(manifest):
            outside = ~region.contains(manifest.lat, manifest.lon)
            report["images_outside_region"] = int(outside.sum())
    if region is not None and aerial is not None:
        report["aerial"] = _aerial_coverage(region, aerial, min(levels))
    if manifest is not None and manifest.bad_rows:
        kinds = ", ".join(f"{n} × {kind}" for kind, n in report["bad_rows"]["kinds"].items())
        report["problems"].append(f"{len(manifest.bad_rows)} bad manifest rows ({kinds})")
    if manifest is not None and image_check != "off":
        images = report["image_check"] = check_images(manifest, image_check, image_sample)
        if images["unreadable"]:
            report["problems"].append(
                f"{images['unreadable']} of {images['checked']} checked images unreadable"
            )
    return report


def _aerial_coverage(region, aerial, level: int) -> dict[str, Any]:
    """Share of the region's level-``level`` cell centres inside the aerial coverage."""
    _, cell_to_latlng, count_cells, region_cells = _geo()
    result: dict[str, Any] = {"bounds": list(aerial.bounds), "level": level}
    if count_cells(region, level) > MAX_REGION_CELLS:
        result["region_cell_centres_covered"] = None
        return result
    lat, lon = cell_to_latlng(region_cells(region, level))
    result["region_cell_centres_covered"] = float(aerial.contains(lat, lon).mean())
    return result


def _load_part(dataset: Dataset, name: str, report: dict[str, Any]):
    """``dataset.<name>`` or None, with the reason recorded as a problem."""
    try:
        return getattr(dataset, name)
    except (OSError, ValueError) as err:
        if getattr(dataset, "strict", False):
            raise
        report["problems"].append(f"{name}: {err}")
        return None


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable text table."""
    lines = [f"dataset {report['dataset']}"]
    if "images" in report:
        images = report["images"]
        lines.append("images      " + "  ".join(f"{k} {v:>8,}" for k, v in images.items()))
        bad = report["bad_rows"]
        kinds = ", ".join(f"{n:,} × {kind}" for kind, n in bad.get("kinds", {}).items())
        lines.append(f"bad rows    {bad['count']:,}" + (f" ({kinds})" if kinds else ""))
        lines.extend(_listed(bad["first"], bad["count"]))
    for level, stats in report.get("levels", {}).items():
        lines.append(f"level {level}")
        uncovered = stats.get("region_cells_without_train_image")
        rows = [
            ("cells with a train image", f"{stats['covered_cells']:,}"),
            ("region cells", f"{stats['region_cells']:,}" if "region_cells" in stats else "-"),
            ("region cells without train", _percent(uncovered)),
            ("images per covered cell", _per_cell(stats)),
            ("val in covered cells", _percent(stats.get("val_in_covered_cells"))),
            ("test in covered cells", _percent(stats.get("test_in_covered_cells"))),
        ]
        lines.extend(f"  {name:<28} {value}" for name, value in rows)
    if "image_check" in report:
        checked = report["image_check"]
        lines.append(
            f"{'unreadable images':<30} {checked['unreadable']:,} of {checked['checked']:,} "
            f"checked ({checked['mode']}; {checked['of']:,} rows)"
        )
        lines.extend(_listed(checked["first"], checked["unreadable"]))
    if "images_outside_region" in report:
        lines.append(f"{'images outside the region':<30} {report['images_outside_region']:,}")
    if "aerial" in report:
        covered = report["aerial"]["region_cell_centres_covered"]
        name = f"aerial (level-{report['aerial']['level']} centres)"
        lines.append(f"{name:<30} {_percent(covered)} of the region")
    lines.extend(f"PROBLEM: {problem}" for problem in report["problems"])
    return "\n".join(lines)


def _listed(first: list[str], count: int) -> list[str]:
    """The first ``SHOWN`` problem rows, indented, and ``... and K more`` for the rest."""
    lines = [f"  {row}" for row in first[:SHOWN]]
    if count > SHOWN:
        lines.append(f"  ... and {count - SHOWN:,} more (--json lists the first {LISTED})")
    return lines


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _per_cell(stats: dict[str, Any]) -> str:
    return (
        f"median {stats['median_images_per_covered_cell']:g}, "
        f"mean {stats['mean_images_per_covered_cell']:.2f}, max {stats['max_images_per_cell']}"
    )
