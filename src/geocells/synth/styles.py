"""Country styles: palettes, architecture, road surfaces and vegetation tints.

Each style is one row of a table, so per-pixel lookups are plain numpy fancy indexing.
Colours are HSV in [0, 1]; roofs are a fixed, style-specific function of the facade colour
(seen from above they differ, but a model can learn the correspondence).
"""

from __future__ import annotations

import numpy as np

STYLE_NAMES = ("alpine", "nordic", "mediterranean", "brick", "modern", "eastern")

# Three facade base hues per style; a block picks one and jitters it.
FACADE_HUES = np.array(
    [
        [0.11, 0.55, 0.95],
        [0.00, 0.14, 0.60],
        [0.08, 0.04, 0.13],
        [0.02, 0.06, 0.98],
        [0.58, 0.50, 0.10],
        [0.30, 0.16, 0.88],
    ],
    np.float32,
)
# (low, high) ranges of facade saturation and value.
FACADE_SAT = np.array(
    [[0.15, 0.40], [0.45, 0.75], [0.25, 0.55], [0.45, 0.70], [0.05, 0.25], [0.30, 0.55]],
    np.float32,
)
FACADE_VAL = np.array(
    [[0.70, 0.95], [0.45, 0.80], [0.70, 0.95], [0.30, 0.55], [0.55, 0.85], [0.65, 0.90]],
    np.float32,
)
# Roof colour from facade colour: hue shift, saturation (base, gain), value (base, gain).
ROOF_HUE_SHIFT = np.array([0.45, 0.50, 0.95, 0.40, 0.60, 0.55], np.float32)
ROOF_SAT = np.array([[0.2, 0.6], [0.1, 0.5], [0.4, 0.6], [0.1, 0.4], [0.0, 0.3], [0.2, 0.4]])
ROOF_VAL = np.array([[0.9, -0.6], [0.8, -0.5], [0.3, 0.4], [0.7, -0.4], [0.2, 0.5], [0.9, -0.5]])
# Floors of urban and suburban buildings (low, high).
URBAN_FLOORS = np.array([[3, 5], [2, 4], [2, 4], [3, 6], [5, 10], [4, 8]], np.float32)
SUBURBAN_FLOORS = np.array([[1, 2], [1, 2], [1, 3], [2, 3], [1, 3], [1, 2]], np.float32)
FLOOR_HEIGHT = np.array([3.0, 2.8, 3.2, 3.4, 3.6, 2.9], np.float32)
# Windows: width and height as fractions of (spacing, floor height), spacing in metres.
WINDOW_W = np.array(
    [[0.30, 0.45], [0.35, 0.55], [0.25, 0.40], [0.35, 0.50], [0.60, 0.90], [0.40, 0.60]]
)
WINDOW_H = np.array(
    [[0.35, 0.50], [0.40, 0.55], [0.45, 0.60], [0.50, 0.65], [0.55, 0.80], [0.35, 0.50]]
)
WINDOW_SPACING = np.array([[2.6, 3.6], [2.4, 3.4], [3.0, 4.2], [2.8, 3.8], [2.0, 3.0], [3.2, 4.6]])
# Window glass value (dark to reflective).
WINDOW_VAL = np.array([0.18, 0.22, 0.12, 0.16, 0.40, 0.20], np.float32)
# Road surface RGB (asphalt / concrete / pavers) and centre marking RGB (negative = none).
ROAD_RGB = np.array(
    [
        [0.30, 0.30, 0.32],
        [0.42, 0.42, 0.42],
        [0.55, 0.50, 0.44],
        [0.22, 0.21, 0.22],
        [0.62, 0.62, 0.60],
        [0.40, 0.36, 0.32],
    ],
    np.float32,
)
MARKING_RGB = np.array(
    [
        [0.9, 0.9, 0.9],
        [-1, -1, -1],
        [0.9, 0.9, 0.85],
        [0.9, 0.75, 0.2],
        [0.9, 0.9, 0.9],
        [-1, -1, -1],
    ],
    np.float32,
)
SIDEWALK_RGB = np.array(
    [
        [0.62, 0.60, 0.58],
        [0.55, 0.55, 0.55],
        [0.75, 0.68, 0.58],
        [0.55, 0.45, 0.40],
        [0.70, 0.70, 0.72],
        [0.58, 0.56, 0.50],
    ],
    np.float32,
)
# Vegetation: hue shift added to the base green, and saturation gain.
VEG_HUE_SHIFT = np.array([0.00, 0.04, -0.07, 0.01, 0.02, -0.04], np.float32)
VEG_SAT = np.array([1.0, 0.9, 0.75, 1.05, 0.95, 0.85], np.float32)
# Building density: block setback (m) and perimeter depth (m); suburban lot size (m).
SETBACK = np.array([3.0, 4.0, 1.0, 1.5, 6.0, 8.0], np.float32)
BLOCK_DEPTH = np.array([12.0, 10.0, 16.0, 14.0, 18.0, 12.0], np.float32)
LOT_SIZE = np.array([24.0, 20.0, 16.0, 18.0, 28.0, 30.0], np.float32)
# Share of urban buildings with a pitched roof (the rest are flat).
PITCHED_SHARE = np.array([0.8, 0.7, 0.3, 0.6, 0.1, 0.4], np.float32)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, inputs broadcast together, output [..., 3] float32."""
    h = np.mod(h, 1.0).astype(np.float32) * 6.0
    s = np.clip(s, 0.0, 1.0).astype(np.float32)
    v = np.clip(v, 0.0, 1.0).astype(np.float32)
    k = np.stack([np.mod(5.0 + h, 6.0), np.mod(3.0 + h, 6.0), np.mod(1.0 + h, 6.0)], axis=-1)
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] - (v * s)[..., None] * ramp
