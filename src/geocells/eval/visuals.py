"""Build the report's figures, examples and map from the evaluation results."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from geocells.data.aerial import OutOfCoverageError
from geocells.data.images import load_image
from geocells.eval import plots
from geocells.eval.report import Example, ReportData
from geocells.eval.summary import EvalSummary
from geocells.geo import haversine_m, latlng_to_local_m, local_m_to_latlng

logger = logging.getLogger(__name__)

MOSAIC_PX = 1024
TILE_PX = 128
RIGHT_M = 100.0


def read_kappa_curve(db_path: Path) -> tuple[list[float], list[float]] | None:
    """(κ values, val recall@1@100m) from the database's calibration CSV, if there is one."""
    for path in sorted(db_path.glob("*.csv")):
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or "kappa" not in rows[0]:
            continue
        recall_key = next((k for k in rows[0] if k.startswith("recall")), None)
        if recall_key is None:
            continue
        return [float(r["kappa"]) for r in rows], [float(r[recall_key]) for r in rows]
    logger.warning("no calibration curve (CSV with a kappa column) in %s", db_path)
    return None


def region_mosaic(data, size_px: int = MOSAIC_PX):
    """A north-up aerial crop covering the region bounds -> (pixels, centre lat, lon, side m)."""

    south, west, north, east = data.region.bounds
    lat0, lon0 = (south + north) / 2, (west + east) / 2
    height = float(np.ravel(haversine_m(south, lon0, north, lon0))[0])
    width = float(np.ravel(haversine_m(lat0, west, lat0, east))[0])
    side = max(height, width)

    try:
        pixels = data.aerial.crop(lat0, lon0, side, size_px)
    except OutOfCoverageError as err:
        logger.warning("error map drawn without the aerial mosaic: %s", err)
        pixels = None
    return pixels, lat0, lon0, side


def _local_xy(lat, lon, lat0, lon0) -> np.ndarray:

    east, north = latlng_to_local_m(np.asarray(lat), np.asarray(lon), lat0, lon0)
    return np.stack([np.asarray(east), np.asarray(north)], axis=-1)


def _pick(indices: np.ndarray, count: int) -> np.ndarray:
    if len(indices) <= count:
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)]


def _example(row: int, result, queries, data, tile_m: float) -> Example:
    """One query image with its top-3 aerial tiles and their distances to the truth."""
    from PIL import Image

    image = load_image(queries.path[row])
    image.thumbnail((340, 256), Image.Resampling.BILINEAR)
    tiles = []
    for rank in range(min(3, result.top_lat.shape[1])):
        lat, lon = result.top_lat[row, rank], result.top_lon[row, rank]
        distance = result.topk_errors_m[row, rank]
        mark = "✓" if distance <= RIGHT_M else "✗"
        try:
            tile = data.aerial.crop(float(lat), float(lon), tile_m, TILE_PX)
        except OutOfCoverageError:
            continue
        tiles.append((plots.image_jpeg(tile), f"#{rank + 1} {mark} {distance:,.0f} m away"))
    error = result.errors_m[row]
    caption = f"{queries.image_id[row]} · top-1 error {error:,.0f} m"
    return Example(plots.image_jpeg(np.asarray(image)), caption, bool(error <= RIGHT_M), tiles)


def make_examples(result, queries, data, tile_m: float, per_kind: int) -> list[Example]:
    """Evenly spread right (≤ 100 m) and wrong queries, alternating, with top-3 tiles."""
    from itertools import chain, zip_longest

    right = _pick(np.flatnonzero(result.errors_m <= RIGHT_M), per_kind)
    wrong = _pick(np.flatnonzero(result.errors_m > RIGHT_M), per_kind)
    rows = [row for row in chain.from_iterable(zip_longest(right, wrong)) if row is not None]
    return [_example(int(row), result, queries, data, tile_m) for row in rows]


def interactive_map(mosaic, lat0, lon0, side_m, queries, result) -> str | None:
    """An offline Leaflet map (offlinefolium): mosaic overlay, truths and hybrid answers."""
    import base64

    import offlinefolium as folium

    m = folium.Map(location=[lat0, lon0], zoom_start=13, tiles=None, control_scale=True)
    if mosaic is not None:
        corners = local_m_to_latlng(
            np.array([-side_m / 2, side_m / 2]), np.array([-side_m / 2, side_m / 2]), lat0, lon0
        )
        bounds = [
            [float(corners[0][0]), float(corners[1][0])],
            [float(corners[0][1]), float(corners[1][1])],
        ]
        url = "data:image/jpeg;base64," + base64.b64encode(plots.image_jpeg(mosaic, 80)).decode()
        folium.raster_layers.ImageOverlay(url, bounds=bounds, opacity=0.9).add_to(m)
        m.fit_bounds(bounds)
    for i in range(len(queries.lat)):
        error = result.errors_m[i]
        right = error <= RIGHT_M
        colour = "#34c759" if right else "#ff3b30"
        truth = [float(queries.lat[i]), float(queries.lon[i])]
        guess = [float(result.top_lat[i, 0]), float(result.top_lon[i, 0])]
        folium.PolyLine(
            [truth, guess], color=colour, weight=1.5 if right else 1, opacity=0.9 if right else 0.35
        ).add_to(m)
        folium.CircleMarker(
            truth,
            radius=2,
            weight=1,
            color=colour,
            fill=True,
            tooltip=f"{queries.image_id[i]}: {error:,.0f} m",
        ).add_to(m)
    return m.get_root().render()


def _z_text(z: float | None) -> str:
    """A val gain in standard errors as text ("z = 1.2 standard errors")."""
    return "an unmeasured margin" if z is None else f"z = {z:.1f} standard errors"


def build_report(summary: EvalSummary, results, queries, data, database, options) -> ReportData:
    """Render every figure: the page's content (``report.render_html`` makes the HTML)."""
    labels = {name: info["label"] for name, info in summary.methods.items()}
    figures = {
        "recall": plots.recall_curves_png({n: r.errors_m for n, r in results.items()}, labels)
    }
    curve = read_kappa_curve(database.path)
    if curve is not None:
        figures["kappa"] = plots.kappa_curve_png(curve[0], curve[1], summary.kappa)
    hybrid = results["hybrid"]
    mosaic, lat0, lon0, side = region_mosaic(data)
    figures["error_map"] = plots.error_map_png(
        mosaic,
        (-side / 2, side / 2, -side / 2, side / 2),
        _local_xy(queries.lat, queries.lon, lat0, lon0),
        _local_xy(hybrid.top_lat[:, 0], hybrid.top_lon[:, 0], lat0, lon0),
        hybrid.errors_m,
        RIGHT_M,
    )
    map_html = None
    if options.interactive_map:
        map_html = interactive_map(mosaic, lat0, lon0, side, queries, hybrid)
    source = summary.calibration
    if source is None:
        calibrated = " (NOT calibrated)"
    elif source.same_dataset:
        calibrated = f" (calibrated on {source.split} of this dataset)"
    else:
        calibrated = f" (calibrated on {source.split} of ANOTHER dataset: {source.dataset})"
    if source is not None and source.kept_kappa_1:
        calibrated += (
            f"; κ = 1 kept: the best κ on {source.split}, {source.kappa_max_recall:.3g}, "
            f"beat it by only {_z_text(source.max_gain_z)}"
        )
    facts = {
        "split": f"{summary.split} ({summary.queries} queries)",
        "region": f"{summary.region_area_km2:,.1f} km²",
        "database cells": f"{len(database):,} at level {summary.levels['cell']}",
        "prototypes": f"level {summary.levels['proto']}",
        "κ": f"{summary.kappa:.3g}{calibrated}",
        "training ground images": f"{summary.train_images:,}",
        "database": summary.database,
        "dataset": summary.dataset,
    }
    report = ReportData(
        title="geocells evaluation",
        facts=facts,
        methods=summary.methods,
        strata=summary.strata,
        figures=figures,
        examples=make_examples(
            hybrid, queries, data, database.meta.tile_size_m, options.examples_per_kind
        ),
        interactive_map_html=map_html,
        strata_definitions=summary.strata_definitions,
    )
    return report
