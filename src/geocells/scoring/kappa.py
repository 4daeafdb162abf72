"""The κ sweep: top-1 of ``sim_A + κ · sim_P`` for many κ from one pass over the cells.

Similarities of the queries against all cells are computed once per chunk of cells; for
every κ of the grid a running maximum is kept, so a sweep costs one matrix product per
chunk plus ``len(grid)`` cheap additions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from geocells.geo import haversine_m


def kappa_grid(low: float = 0.05, high: float = 20.0, num: int = 41) -> np.ndarray:
    """Log-spaced κ values from ``low`` to ``high``, with κ = 1 always included."""
    if not 0 < low < high or num < 2:
        raise ValueError(f"bad kappa grid: low={low}, high={high}, num={num}")
    grid = np.geomspace(low, high, num)
    return np.unique(np.append(grid, 1.0))


def similarity_chunks(
    queries: np.ndarray, aerial: np.ndarray, proto: np.ndarray, chunk_size: int = 65536
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(first_row, sim_A [Q, c], sim_P [Q, c])`` over chunks of the cell arrays."""
    queries = np.asarray(queries, dtype=np.float32)
    for start in range(0, len(aerial), chunk_size):
        stop = min(start + chunk_size, len(aerial))
        sim_a = queries @ np.asarray(aerial[start:stop], dtype=np.float32).T
        sim_p = queries @ np.asarray(proto[start:stop], dtype=np.float32).T
        yield start, sim_a, sim_p


def sweep_top1(
    chunks: Iterable[tuple[int, np.ndarray, np.ndarray]], kappas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 row and score per (κ, query): ``-> (rows int64[K, Q], scores float32[K, Q])``."""
    kappas = np.asarray(kappas, dtype=np.float32)
    best_rows: np.ndarray | None = None
    best_scores: np.ndarray | None = None
    for start, sim_a, sim_p in chunks:
        if best_rows is None:
            best_rows = np.full((len(kappas), len(sim_a)), -1, dtype=np.int64)
            best_scores = np.full((len(kappas), len(sim_a)), -np.inf, dtype=np.float32)
        for k, kappa in enumerate(kappas):
            scores = sim_a + kappa * sim_p
            argmax = np.argmax(scores, axis=1)
            top = scores[np.arange(len(scores)), argmax]
            better = top > best_scores[k]
            best_scores[k, better] = top[better]
            best_rows[k, better] = argmax[better] + start
    if best_rows is None:
        raise ValueError("kappa sweep over an empty database")
    return best_rows, best_scores


def top1_errors(
    best_rows: np.ndarray,
    cell_lat: np.ndarray,
    cell_lon: np.ndarray,
    query_lat: np.ndarray,
    query_lon: np.ndarray,
) -> np.ndarray:
    """Distance (m) from each query to its top-1 cell, per κ: ``-> float [K, Q]``."""

    return haversine_m(
        cell_lat[best_rows].reshape(-1),
        cell_lon[best_rows].reshape(-1),
        np.broadcast_to(query_lat, best_rows.shape).reshape(-1),
        np.broadcast_to(query_lon, best_rows.shape).reshape(-1),
    ).reshape(best_rows.shape)


def recall_curve(
    best_rows: np.ndarray,
    cell_lat: np.ndarray,
    cell_lon: np.ndarray,
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    radius_m: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@1 within ``radius_m`` and median error (m) per κ: ``-> ([K], [K])``."""
    errors = top1_errors(best_rows, cell_lat, cell_lon, query_lat, query_lon)
    _, recall, median = recall_by_kappa(errors, radius_m)
    return recall, median


def recall_by_kappa(
    errors_m: np.ndarray, radius_m: float = 100.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From top-1 errors per κ and query (m, ``[K, Q]``): the hits (bool ``[K, Q]``, error
    within ``radius_m``, inclusive), recall@1 and median error per κ (``[K]`` each)."""
    hits = errors_m <= radius_m
    return hits, hits.mean(axis=1), np.median(errors_m, axis=1)


def paired_gain(hits: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean gain in recall of ``hits`` over ``reference`` (bool [Q] each, same queries) and its
    z-score (gain / standard error of the per-query differences); z is 0 without differences."""
    diff = np.asarray(hits, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    gain = float(diff.mean()) if len(diff) else 0.0
    spread = float(diff.std()) if len(diff) else 0.0
    if spread == 0.0:
        return gain, 0.0
    return gain, gain / (spread / np.sqrt(len(diff)))


def select_kappa(kappas: np.ndarray, recall: np.ndarray, median_error: np.ndarray) -> int:
    """Index of the best κ: highest recall, then lowest median error, then the middle of ties."""
    best = np.flatnonzero(recall >= recall.max() - 1e-12)
    best = best[median_error[best] <= median_error[best].min() + 1e-9]
    return int(best[len(best) // 2])


def guard_kappa(
    kappas: np.ndarray, hits: np.ndarray, best: int, min_gain_z: float
) -> tuple[int, float, float]:
    """``(chosen index, gain, z)``: ``best`` if its recall beats κ = 1 on the same queries by
    ``min_gain_z`` standard errors or more, else the index of κ = 1; ``gain`` and ``z`` are
    ``paired_gain`` of ``best`` over κ = 1 (``hits``: bool [K, Q]; ``min_gain_z`` <= 0 or no
    κ = 1 in the grid: always ``best``).

    On a flat, noisy curve the maximum of the grid is mostly noise and loses to κ = 1 on
    other queries; the guard keeps κ = 1 there (docs/database.md, "Calibration").
    """
    one = np.flatnonzero(kappas == 1.0)
    if len(one) == 0:
        return best, 0.0, 0.0
    gain, z = paired_gain(hits[best], hits[one[0]])
    keep_best = min_gain_z <= 0 or z >= min_gain_z
    return (best if keep_best else int(one[0])), gain, z
