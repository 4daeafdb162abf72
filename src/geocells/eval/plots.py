"""Figures of the evaluation report, each returned as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

# Method name -> colour, so every figure uses the same colours for the same method.
METHOD_COLOURS = {
    "hybrid": "#d62728",
    "hybrid_k1": "#ff9896",
    "aerial": "#1f77b4",
    "proto_lc": "#2ca02c",
    "proto_lp": "#98df8a",
    "ground_retrieval": "#9467bd",
    "colour_histogram": "#7f7f7f",
}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def recall_curves_png(errors_by_method: Mapping[str, np.ndarray], labels: Mapping[str, str]):
    """Recall@1 against distance threshold (log x axis), one line per method -> PNG bytes."""
    figure = _figure(6.8, 4.2)
    axes = figure.add_subplot()
    thresholds = np.geomspace(10, 10_000, 200)
    for name, errors in errors_by_method.items():
        errors = np.sort(np.asarray(errors))
        recall = np.searchsorted(errors, thresholds, side="right") / max(len(errors), 1)
        axes.plot(
            thresholds,
            100 * recall,
            label=labels.get(name, name),
            color=METHOD_COLOURS.get(name),
            linewidth=2.2 if name == "hybrid" else 1.4,
        )
    for threshold in (100, 200):
        axes.axvline(threshold, color="0.8", linestyle="--", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("distance threshold (m)")
    axes.set_ylabel("recall@1 (% of queries)")
    axes.set_ylim(0, 100)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    return _png(figure)


def kappa_curve_png(kappa: Sequence[float], recall: Sequence[float], chosen: float | None):
    """Validation recall@1@100m against κ (log x), the chosen κ marked -> PNG bytes."""
    figure = _figure(5.6, 4.2)
    axes = figure.add_subplot()
    axes.plot(kappa, 100 * np.asarray(recall, dtype=float), marker="o", markersize=3)
    if chosen is not None:
        axes.axvline(
            chosen,
            color=METHOD_COLOURS["hybrid"],
            linestyle="--",
            label=f"calibrated κ = {chosen:.3g}",
        )
        axes.legend(fontsize=8)
    axes.set_ylim(bottom=0)
    axes.set_xscale("log")
    axes.set_xlabel("κ (weight of the prototype part)")
    axes.set_ylabel("val recall@1 within 100 m (%)")
    axes.grid(True, alpha=0.3)
    return _png(figure)


def error_map_png(
    background: np.ndarray | None,
    extent_m: tuple[float, float, float, float],
    true_xy: np.ndarray,
    predicted_xy: np.ndarray,
    errors_m: np.ndarray,
    threshold_m: float = 100.0,
):
    """True (dots) and predicted positions (lines to them) in local metres over the mosaic.

    extent_m: (left, right, bottom, top) of ``background`` in the same local metric frame as
    ``true_xy`` and ``predicted_xy`` ([Q, 2], x east, y north).
    """
    figure = _figure(8.0, 8.0)
    axes = figure.add_subplot()
    if background is not None:
        axes.imshow(background, extent=extent_m, origin="upper", alpha=0.85)
    from matplotlib.collections import LineCollection

    right = np.asarray(errors_m) <= threshold_m
    # Many long wrong lines would hide the map: draw them thin and faint, right ones on top.
    styles = ((~right, "#ff3b30", "wrong", 0.5, 0.35), (right, "#34c759", "right", 1.2, 0.9))
    for mask, colour, name, width, alpha in styles:
        segments = np.stack([true_xy[mask], predicted_xy[mask]], axis=1)
        axes.add_collection(LineCollection(segments, colors=colour, linewidths=width, alpha=alpha))
        label = f"{name}: {int(mask.sum())}"
        if name == "right":
            label = f"right (≤ {threshold_m:g} m): {int(mask.sum())}"
        axes.scatter(true_xy[mask, 0], true_xy[mask, 1], s=10, color=colour, edgecolors="white",
                     linewidths=0.3, label=label, zorder=3)  # fmt: skip
    axes.set_xlim(extent_m[0], extent_m[1])
    axes.set_ylim(extent_m[2], extent_m[3])
    axes.set_aspect("equal")
    axes.set_xlabel("east (m)")
    axes.set_ylabel("north (m)")
    axes.legend(
        fontsize=8,
        loc="lower right",
        title="dot = true position, line → prediction",
        title_fontsize=8,
    )
    return _png(figure)


def image_png(pixels: np.ndarray) -> bytes:
    """A uint8 ``[H, W, 3]`` array as PNG bytes (no figure chrome)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def image_jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    """A uint8 ``[H, W, 3]`` array as JPEG bytes (smaller than PNG for photos)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
