"""Localisation metrics as pure numpy functions.

All distances are metres. ``errors_m`` is the distance from each query's true position to
its top-1 answer; ``topk_errors_m`` is ``[Q, k]`` for the top-k answers in score order.
The paper's *rank* is the 1-based position, in the score-sorted database, of the first
database item within ``radius_m`` (200 m) of the query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_THRESHOLDS_M: tuple[int, ...] = (25, 50, 100, 200, 500, 1000)
DEFAULT_TOP_K: tuple[int, ...] = (1, 5, 10)
RANK_RADIUS_M = 200.0


def _errors(errors_m: np.ndarray | Sequence[float]) -> np.ndarray:
    errors = np.asarray(errors_m, dtype=np.float64)
    if errors.ndim != 1:
        raise ValueError(f"errors_m must be 1-D, got shape {errors.shape}")
    if np.isnan(errors).any() or (errors < 0).any():
        raise ValueError("errors_m must be non-negative numbers (found NaN or a negative value)")
    return errors


def recall_within(errors_m: np.ndarray | Sequence[float], threshold_m: float) -> float:
    """Share of queries whose top-1 answer lies within ``threshold_m`` metres (inclusive)."""
    errors = _errors(errors_m)
    if errors.size == 0:
        return float("nan")
    return float(np.mean(errors <= threshold_m))


def recall_curve(
    errors_m: np.ndarray | Sequence[float], thresholds_m: Sequence[float] = DEFAULT_THRESHOLDS_M
) -> dict[float, float]:
    """``{threshold: recall_within(errors, threshold)}`` for every threshold."""
    return {t: recall_within(errors_m, t) for t in thresholds_m}


def median_error(errors_m: np.ndarray | Sequence[float]) -> float:
    """Median top-1 error in metres."""
    errors = _errors(errors_m)
    return float(np.median(errors)) if errors.size else float("nan")


def mean_error(errors_m: np.ndarray | Sequence[float]) -> float:
    """Mean top-1 error in metres."""
    errors = _errors(errors_m)
    return float(np.mean(errors)) if errors.size else float("nan")


def recall_at_k(topk_errors_m: np.ndarray, k: int, threshold_m: float) -> float:
    """Share of queries with at least one of their first ``k`` answers within ``threshold_m``."""
    topk = np.asarray(topk_errors_m, dtype=np.float64)
    if topk.ndim != 2:
        raise ValueError(f"topk_errors_m must be [Q, k], got shape {topk.shape}")
    if not 1 <= k <= topk.shape[1]:
        raise ValueError(f"k={k} is outside 1..{topk.shape[1]} (columns of topk_errors_m)")
    if topk.shape[0] == 0:
        return float("nan")
    return float(np.mean((topk[:, :k] <= threshold_m).any(axis=1)))


def rank_within(scores: np.ndarray, distances_m: np.ndarray, radius_m: float = RANK_RADIUS_M):
    """The paper's rank: 1-based position of the first item within ``radius_m`` by score.

    scores, distances_m: ``[Q, N]`` (score and distance of every database item per query)
    -> int64 ``[Q]``; 0 where no item lies within ``radius_m``. Ties count in the query's
    favour (items scoring exactly as high as the best near item do not push it down).
    """
    scores = np.asarray(scores)
    distances = np.asarray(distances_m)
    if scores.ndim != 2 or scores.shape != distances.shape:
        raise ValueError(
            f"scores {scores.shape} and distances_m {distances.shape} must both be [Q, N]"
        )
    near = distances <= radius_m
    best_near = np.where(near, scores, -np.inf).max(axis=1, initial=-np.inf)
    ranks = (scores > best_near[:, None]).sum(axis=1) + 1
    return np.where(near.any(axis=1), ranks, 0).astype(np.int64)


def rank_summary(ranks: np.ndarray) -> dict[str, float]:
    """Median rank and share of queries with no item within the radius (rank 0)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    found = ranks[ranks > 0]
    return {
        "median_rank": float(np.median(found)) if found.size else float("nan"),
        "share_without_near_item": float(np.mean(ranks == 0)) if ranks.size else float("nan"),
    }


def summarize(
    errors_m: np.ndarray,
    topk_errors_m: np.ndarray | None = None,
    ranks: np.ndarray | None = None,
    thresholds_m: Sequence[float] = DEFAULT_THRESHOLDS_M,
    top_k: Sequence[int] = DEFAULT_TOP_K,
    recall_at_k_threshold_m: float = 100.0,
) -> dict[str, float]:
    """Every metric of one method on one set of queries, as a flat JSON-ready dict."""
    errors = _errors(errors_m)
    out: dict[str, float] = {"queries": int(errors.size)}
    for threshold, recall in recall_curve(errors, thresholds_m).items():
        out[f"R@1@{threshold:g}m"] = recall
    out["median_error_m"] = median_error(errors)
    out["mean_error_m"] = mean_error(errors)
    if topk_errors_m is not None:
        available = np.asarray(topk_errors_m).shape[1]
        for k in top_k:
            if k <= available:
                key = f"R@{k}@{recall_at_k_threshold_m:g}m"
                out[key] = recall_at_k(topk_errors_m, k, recall_at_k_threshold_m)
    if ranks is not None:
        out.update(rank_summary(ranks))
    return out


def coverage_density_per_km2(
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    train_lat: np.ndarray,
    train_lon: np.ndarray,
    radius_m: float = 500.0,
) -> np.ndarray:
    """Training ground images per km² within ``radius_m`` of each query -> float64 [Q]."""
    # Local equirectangular projection: exact enough within a few km, and no geo import.
    earth_radius_m = 6_371_008.8
    query_lat = np.asarray(query_lat, dtype=np.float64)
    query_lon = np.asarray(query_lon, dtype=np.float64)
    train_lat = np.asarray(train_lat, dtype=np.float64)
    train_lon = np.asarray(train_lon, dtype=np.float64)
    counts = np.zeros(query_lat.shape[0], dtype=np.int64)
    for start in range(0, query_lat.shape[0], 256):
        lat = np.radians(query_lat[start : start + 256, None])
        lon = np.radians(query_lon[start : start + 256, None])
        dy = (np.radians(train_lat[None]) - lat) * earth_radius_m
        dx = (np.radians(train_lon[None]) - lon) * earth_radius_m * np.cos(lat)
        counts[start : start + 256] = (dx * dx + dy * dy <= radius_m**2).sum(axis=1)
    area_km2 = np.pi * (radius_m / 1000.0) ** 2
    return counts / area_km2


def density_strata(density_per_km2: np.ndarray, urban_threshold_per_km2: float) -> np.ndarray:
    """``"urban"`` where coverage density reaches the threshold, else ``"rural"`` -> str [Q]."""
    density = np.asarray(density_per_km2, dtype=np.float64)
    return np.where(density >= urban_threshold_per_km2, "urban", "rural")


def covered_strata(query_cells: np.ndarray, train_cells: np.ndarray) -> np.ndarray:
    """``"covered"`` where the query's cell holds a training ground image, else ``"uncovered"``."""
    covered = np.isin(np.asarray(query_cells), np.asarray(train_cells))
    return np.where(covered, "covered", "uncovered")


def stratified(
    strata: np.ndarray,
    errors_m: np.ndarray,
    topk_errors_m: np.ndarray | None = None,
    ranks: np.ndarray | None = None,
    **summary_kwargs,
) -> dict[str, dict[str, float]]:
    """``summarize`` separately for every stratum label (sorted), e.g. urban / rural."""
    strata = np.asarray(strata)
    errors = np.asarray(errors_m)
    if strata.shape != errors.shape:
        raise ValueError(f"strata {strata.shape} and errors_m {errors.shape} differ in shape")
    out = {}
    for label in sorted(set(strata.tolist())):
        mask = strata == label
        out[str(label)] = summarize(
            errors[mask],
            None if topk_errors_m is None else np.asarray(topk_errors_m)[mask],
            None if ranks is None else np.asarray(ranks)[mask],
            **summary_kwargs,
        )
    return out
