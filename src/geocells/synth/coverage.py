"""Where the capture cars drove: positions of ground images per split.

Training captures lie on roads, dense in towns and sparse in the country, and never in
"gap" patches (areas the training campaign did not drive). Validation and test queries
lie on roads everywhere, gaps included, at least ``min_query_distance_m`` from every
training position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from geocells.synth.noise import fractal_noise
from geocells.synth.world import ROAD, World

log = logging.getLogger(__name__)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_BATCH = 40_000


@dataclass
class Positions:
    """Capture positions of one split in world metres, with compass headings in degrees."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray


def region_square(world: World) -> tuple[float, float, float, float]:
    """The region as a world-metre square (xmin, ymin, xmax, ymax) around the centre."""
    half = world.cfg.size_km * 500.0
    cx, cy = float(world.center_xy[0][0]), float(world.center_xy[1][0])
    return cx - half, cy - half, cx + half, cy + half


def gap_threshold(world: World) -> float:
    """Noise level above which a point lies in a gap patch (``gap_share`` of the area)."""
    xmin, ymin, xmax, ymax = region_square(world)
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, 96), np.linspace(ymin, ymax, 96))
    values = fractal_noise(world.seed, 501, gx.ravel(), gy.ravel(), world.cfg.gap_scale_m, 2)
    return float(np.quantile(values, 1.0 - world.cfg.gap_share))


def in_gap(world: World, x: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """True where the training campaign never drove."""
    return fractal_noise(world.seed, 501, x, y, world.cfg.gap_scale_m, 2) > threshold


def _draw(world, rng, n, keep_fn, name) -> Positions:
    """Rejection-sample ``n`` road positions accepted by ``keep_fn(x, y, layout, u01)``."""
    cfg = world.cfg
    xmin, ymin, xmax, ymax = region_square(world)
    xs, ys = [], []
    total, tries = 0, 0
    while total < n:
        tries += 1
        if tries > 400:
            raise ValueError(f"could not place {n} {name} captures on roads; got {total}")
        x = rng.uniform(xmin, xmax, _BATCH)
        y = rng.uniform(ymin, ymax, _BATCH)
        u01 = rng.uniform(0, 1, _BATCH)
        lay = world.layout(x, y)
        road = lay.ground == ROAD
        weight = np.where(lay.u > 0.15, cfg.town_capture_weight, cfg.rural_capture_weight)
        ok = road & (u01 < weight) & keep_fn(x, y)
        xs.append(x[ok])
        ys.append(y[ok])
        total += int(ok.sum())
    x, y = np.concatenate([*xs, np.zeros(0)])[:n], np.concatenate([*ys, np.zeros(0)])[:n]
    return Positions(x, y, rng.uniform(0.0, 360.0, n))


def capture_positions(world: World) -> dict[str, Positions]:
    """Positions of the train, val and test captures (deterministic from the seed)."""
    cfg = world.cfg
    threshold = gap_threshold(world)
    train = _draw(
        world,
        np.random.default_rng([cfg.seed, 601, SPLIT_IDS["train"]]),
        cfg.n_train,
        lambda x, y: ~in_gap(world, x, y, threshold),
        "train",
    )
    tree = cKDTree(np.stack([train.x, train.y], 1)) if cfg.n_train else None

    def far_from_train(x, y):
        if tree is None:
            return np.ones(x.shape, bool)
        dist, _ = tree.query(np.stack([x, y], 1), k=1)
        # Grid metres differ from geodesic metres by < 0.1 % in UTM; keep a margin.
        return dist >= cfg.min_query_distance_m * 1.002 + 0.05

    out = {"train": train}
    for split in ("val", "test"):
        rng = np.random.default_rng([cfg.seed, 601, SPLIT_IDS[split]])
        out[split] = _draw(world, rng, getattr(cfg, f"n_{split}"), far_from_train, split)
    return out
