"""Where the capture cars drove: positions of ground images per split.

Training captures lie on roads, dense in towns and sparse in the country, and never in
"gap" patches (areas the training campaign did not drive). With ``train_capture:
panorama`` the training campaign drives like Street View: a 360° panorama every
``capture_spacing_m`` along town roads and every ``rural_capture_spacing_m`` along rural
roads (road points thinned so that no two captures are closer). With ``perspective``,
``n_train`` single views are drawn at random road points. Validation and test queries are
single perspective views on roads everywhere, gaps included, at least
``min_query_distance_m`` from every training position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from geocells.synth.noise import fractal_noise
from geocells.synth.world import ROAD, World

log = logging.getLogger(__name__)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_BATCH = 40_000
# Drive candidates: uniform road points, this many per capture_spacing_m² of road, then
# thinned. 4 leaves almost no road point farther than the spacing from a capture.
_CANDIDATES_PER_SPACING2 = 4.0


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


def thin(x: np.ndarray, y: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random maximal subset of points no two of which are closer than
    ``spacing`` (greedy dart throwing over a random order)."""
    if len(x) == 0:
        return np.zeros(0, np.int64)
    points = np.stack([x, y], 1)
    tree = cKDTree(points)
    taken = np.zeros(len(x), bool)
    kept = []
    for i in rng.permutation(len(x)):
        if taken[i]:
            continue
        kept.append(i)
        taken[tree.query_ball_point(points[i], spacing)] = True
    return np.sort(np.array(kept, np.int64))


def drive_positions(world: World, threshold: float, progress: bool = True) -> Positions:
    """Panorama positions of a Street View-like training campaign (north-aligned)."""
    cfg = world.cfg
    rng = np.random.default_rng([cfg.seed, 601, 3])
    xmin, ymin, xmax, ymax = region_square(world)
    total = int((xmax - xmin) * (ymax - ymin) * _CANDIDATES_PER_SPACING2 / cfg.capture_spacing_m**2)
    xs, ys, towns = [], [], []
    disable = None if progress else True  # None: off unless stderr is a terminal
    for start in tqdm(
        range(0, total, _BATCH), desc="drive", unit="batch", leave=False, disable=disable
    ):
        n = min(_BATCH, total - start)
        x, y = rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)
        lay = world.layout(x, y)
        ok = (lay.ground == ROAD) & ~in_gap(world, x, y, threshold)
        xs.append(x[ok])
        ys.append(y[ok])
        towns.append(lay.u[ok] > 0.15)
    x, y, town = np.concatenate(xs), np.concatenate(ys), np.concatenate(towns)
    keep_town = np.flatnonzero(town)[thin(x[town], y[town], cfg.capture_spacing_m, rng)]
    rural = np.flatnonzero(~town)
    keep_rural = rural[thin(x[rural], y[rural], cfg.rural_capture_spacing_m, rng)]
    if len(keep_town) and len(keep_rural):  # no rural capture crowding a town one
        dist, _ = cKDTree(np.stack([x[keep_town], y[keep_town]], 1)).query(
            np.stack([x[keep_rural], y[keep_rural]], 1)
        )
        keep_rural = keep_rural[dist >= cfg.capture_spacing_m]
    keep = np.sort(np.concatenate([keep_town, keep_rural]))
    if cfg.n_train and cfg.n_train < len(keep):  # a cap: a random subset of the drive
        keep = np.sort(rng.choice(keep, cfg.n_train, replace=False))
    log.info("drive: %d panoramas (%d on town roads)", len(keep), int(town[keep].sum()))
    return Positions(x[keep], y[keep], np.zeros(len(keep)))


def capture_positions(world: World, progress: bool = True) -> dict[str, Positions]:
    """Positions of the train, val and test captures (deterministic from the seed)."""
    cfg = world.cfg
    threshold = gap_threshold(world)
    if cfg.train_capture == "panorama":
        train = drive_positions(world, threshold, progress)
    else:
        train = _draw(
            world,
            np.random.default_rng([cfg.seed, 601, SPLIT_IDS["train"]]),
            cfg.n_train,
            lambda x, y: ~in_gap(world, x, y, threshold),
            "train",
        )
    tree = cKDTree(np.stack([train.x, train.y], 1)) if len(train.x) else None

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
