"""The compared methods as searchable databases, and their evaluation on one query set.

Every method is a ``MethodDatabase``: positions of its items, ``score(queries, rows)`` over
any slice or set of its rows, its storage size and, for the deployed hybrid, ``search``:
the Localizer's own searcher (IVF-PQ where the database has an index). ``evaluate_method``
streams: per chunk of queries it walks the items in blocks of about 64 MB of scores,
keeps a running top-k (``geocells.scoring.exact``'s tie rule) and counts the items that
beat each query's best item within 200 m (the paper's rank), so neither a float32 copy of
the codes nor a [Q, N] score matrix is ever built: a 25 M-cell database fits in 24 GB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geocells.geo import cell_to_latlng, haversine_m
from geocells.scoring import metrics
from geocells.scoring.exact import block_top_k, merge_top_k

logger = logging.getLogger(__name__)

Rows = slice | np.ndarray
Scorer = Callable[[np.ndarray, Rows], np.ndarray]  # (queries [q, F], rows) -> [q, len(rows)]
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # -> (scores, rows) [q, k]
BLOCK_SCORES = 16_000_000  # float32 scores per (query chunk x item block): 64 MB
# Relative half-width of the band kept around the approximate best near score: far wider
# than the rounding difference between two matrix products of the same vectors.
BAND = 1e-4


@dataclass
class MethodDatabase:
    """One method: item positions, ``score(queries, rows)``, storage bytes, maybe ``search``."""

    name: str
    label: str
    lat: np.ndarray
    lon: np.ndarray
    score: Scorer
    storage_bytes: int
    query_kind: str = "embedding"  # which query features `score` takes: embedding | histogram
    search: Search | None = None  # the deployed top-k; None: exact, from `score`

    def __len__(self) -> int:
        return int(self.lat.shape[0])


@dataclass
class MethodResult:
    """Per-query outcome of one method: top-k item indices and positions, errors, ranks."""

    name: str
    top_index: np.ndarray  # int64 [Q, k]
    top_lat: np.ndarray  # float64 [Q, k]
    top_lon: np.ndarray  # float64 [Q, k]
    topk_errors_m: np.ndarray  # float64 [Q, k]
    ranks: np.ndarray  # int64 [Q], 0 = nothing within the rank radius
    exact_top1: np.ndarray | None = None  # int64 [Q]: exact top-1 where `search` answered
    top_scores: np.ndarray | None = None  # float32 [Q, k]: the scores of the top-k items

    @property
    def errors_m(self) -> np.ndarray:
        """Top-1 error per query in metres."""
        return self.topk_errors_m[:, 0]


class NearItems:
    """Items within a radius of a point, from items sorted by latitude (no [Q, N] arrays)."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray) -> None:
        self.order = np.argsort(lat, kind="stable")
        self.lat, self.lon = np.asarray(lat)[self.order], np.asarray(lon)[self.order]

    def within(self, lat: float, lon: float, radius_m: float) -> np.ndarray:
        """Indices (sorted) of the items within ``radius_m`` of (lat, lon)."""

        span = radius_m / 111_000.0 * 1.1  # degrees of latitude, 10 % generous
        lo, hi = np.searchsorted(self.lat, [lat - span, lat + span])
        band_lat, band_lon = self.lat[lo:hi], self.lon[lo:hi]
        close = haversine_m(np.full(hi - lo, lat), np.full(hi - lo, lon), band_lat, band_lon)
        return np.sort(self.order[lo:hi][close <= radius_m])


def _near_rows(queries_lat, queries_lon, near: NearItems, radius_m: float) -> list[np.ndarray]:
    """Per query, the sorted rows of the items within ``radius_m``."""
    return [near.within(float(la), float(lo), radius_m) for la, lo in zip(queries_lat, queries_lon)]


def _approximate_best(method, queries, near_rows: list[np.ndarray]) -> np.ndarray:
    """Per query, the best score among its near rows (-inf: none), from a small product."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    for i, rows in enumerate(near_rows):
        if len(rows):
            best[i] = np.max(_checked(method, queries[i : i + 1], rows, len(rows)))
    return best


def _checked(method: MethodDatabase, queries: np.ndarray, rows: Rows, count: int) -> np.ndarray:
    scores = np.asarray(method.score(queries, rows), dtype=np.float32)
    if scores.shape != (len(queries), count):
        raise ValueError(
            f"method {method.name!r} returned scores of shape {scores.shape}, "
            f"expected {(len(queries), count)}"
        )
    return scores


class _RankCounter:
    """The paper's rank, exact on the block scores, in the same pass as the top-k.

    The best near score is known only after the pass, so each block counts the items
    above ``high`` and keeps the few in the band ``(low, high]`` around an approximate best
    (from another, smaller product: other rounding); the band settles them at the end.
    """

    def __init__(self, approximate: np.ndarray, near_rows: list[np.ndarray]) -> None:
        finite = np.isfinite(approximate)
        slack = BAND * np.maximum(1.0, np.abs(np.where(finite, approximate, 0.0)))
        self.low = np.where(finite, approximate - slack, np.inf)
        self.high = np.where(finite, approximate + slack, np.inf)
        self.near_rows = near_rows
        self.best = np.full(len(approximate), -np.inf, dtype=np.float32)
        self.above = np.zeros(len(approximate), dtype=np.int64)
        self.band_query: list[np.ndarray] = []  # (query, score) of the items in the band
        self.band_score: list[np.ndarray] = []

    def add(self, scores: np.ndarray, start: int) -> None:
        """Count block ``scores [q, b]`` of the items ``start..start+b``."""
        stop = start + scores.shape[1]
        for i, rows in enumerate(self.near_rows):
            inside = rows[(rows >= start) & (rows < stop)] - start
            if len(inside):
                self.best[i] = max(self.best[i], scores[i, inside].max())
        self.above += (scores > self.high[:, None]).sum(axis=1)
        query, column = np.nonzero((scores > self.low[:, None]) & (scores <= self.high[:, None]))
        self.band_query.append(query)
        self.band_score.append(scores[query, column])

    def ranks(self) -> np.ndarray:
        """int64 [q]: 1 + items scoring above the best near item (ties in the query's
        favour); 0 where no item lies within the radius."""
        found = np.isfinite(self.best)
        missed = found & ~((self.low < self.best) & (self.best <= self.high))
        if missed.any():
            rows = np.flatnonzero(missed)[:10].tolist()
            raise RuntimeError(f"rank band missed the best near score of queries {rows}")
        query = np.concatenate([np.zeros(0, np.int64), *self.band_query])
        score = np.concatenate([np.zeros(0, np.float32), *self.band_score])
        beats = np.bincount(query[score > self.best[query]], minlength=len(self.best))
        return np.where(found, 1 + self.above + beats, 0).astype(np.int64)


def _stream(method: MethodDatabase, queries: np.ndarray, near_rows: list[np.ndarray], k: int):
    """One pass over the items: exact top-k rows and scores ``[q, k]`` and the rank of each
    query."""
    n_items = len(method)
    block = int(np.clip(BLOCK_SCORES // max(len(queries), 1), 1024, 1 << 20))
    top_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    top_rows = np.zeros((len(queries), 0), dtype=np.int64)
    counter = _RankCounter(_approximate_best(method, queries, near_rows), near_rows)
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        scores = _checked(method, queries, slice(start, stop), stop - start)
        counter.add(scores, start)
        part = block_top_k(scores, k)
        top_scores, top_rows = merge_top_k(
            top_scores, top_rows, np.take_along_axis(scores, part, 1), part + start, k
        )
    return top_rows, top_scores, counter.ranks()


def evaluate_method(
    method: MethodDatabase,
    query_features: np.ndarray,
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    top_k: int = 10,
    chunk_size: int = 256,
    rank_radius_m: float = metrics.RANK_RADIUS_M,
) -> MethodResult:
    """Top-k answers (from ``method.search`` when it has one, else exact) and the rank of
    the best item within ``rank_radius_m`` (exact, every score streamed) of every query."""

    n_items = len(method)
    if n_items == 0:
        raise ValueError(f"method {method.name!r} has an empty database")
    k = min(top_k, n_items)
    n_queries = query_features.shape[0]
    near = NearItems(method.lat, method.lon)
    top_index = np.zeros((n_queries, k), dtype=np.int64)
    top_scores = np.zeros((n_queries, k), dtype=np.float32)
    exact_top1 = np.zeros(n_queries, dtype=np.int64) if method.search is not None else None
    ranks = np.zeros(n_queries, dtype=np.int64)
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        queries = np.asarray(query_features[start:stop], dtype=np.float32)
        lat_q, lon_q = query_lat[start:stop], query_lon[start:stop]
        near_rows = _near_rows(lat_q, lon_q, near, rank_radius_m)
        exact_rows, exact_scores, ranks[start:stop] = _stream(method, queries, near_rows, k)
        if method.search is None:
            top_index[start:stop], top_scores[start:stop] = exact_rows, exact_scores
        else:
            scores, found = method.search(queries, k)
            top_index[start:stop] = np.where(found >= 0, found, exact_rows)
            top_scores[start:stop] = np.where(found >= 0, scores, exact_scores)
            exact_top1[start:stop] = exact_rows[:, 0]
    errors = haversine_m(
        np.repeat(query_lat, k), np.repeat(query_lon, k),
        method.lat[top_index].ravel(), method.lon[top_index].ravel(),
    ).reshape(n_queries, k)  # fmt: skip
    return MethodResult(
        name=method.name,
        top_index=top_index,
        top_lat=method.lat[top_index],
        top_lon=method.lon[top_index],
        topk_errors_m=errors,
        ranks=ranks,
        exact_top1=exact_top1,
        top_scores=top_scores,
    )


def codes_scorer(*parts: tuple[np.ndarray, float]) -> Scorer:
    """``score(queries, rows) = (Σ w · codes[rows]) · queries``: codes (float16 memmaps are
    fine) are converted block by block, never copied whole."""

    def score(queries: np.ndarray, rows: Rows) -> np.ndarray:
        (first, weight), *rest = parts
        block = np.asarray(first[rows], dtype=np.float32)
        if weight != 1.0:
            block *= np.float32(weight)
        for codes, w in rest:
            block += np.float32(w) * np.asarray(codes[rows], dtype=np.float32)
        return np.asarray(queries, np.float32) @ block.T

    return score


def cell_code_methods(
    cells: np.ndarray,
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    proto_lp_cells: np.ndarray,
    proto_lp: np.ndarray,
    search: Search | None = None,
) -> list[MethodDatabase]:
    """The paper's ablation over one cell database: prototypes at Lp and Lc, aerial, hybrids.

    cells: uint64 [N] level-Lc ids; aerial, proto: [N, D] (float16 memmaps: read in
    blocks); proto_lp: [P, D] at level Lp; ``search``: the deployed searcher of the hybrid.
    Sizes count what a deployment stores: float16 codes plus 8-byte cell ids.
    """

    lat, lon = cell_to_latlng(np.asarray(cells, dtype=np.uint64))
    lp_lat, lp_lon = cell_to_latlng(np.asarray(proto_lp_cells, dtype=np.uint64))
    n, dim = aerial.shape
    code_bytes = n * dim * 2 + n * 8
    return [
        MethodDatabase(
            "proto_lp",
            "prototype-only at Lp (classification)",
            lp_lat,
            lp_lon,
            codes_scorer((np.asarray(proto_lp, dtype=np.float32), 1.0)),
            proto_lp.shape[0] * (proto_lp.shape[1] * 2 + 8),
        ),
        MethodDatabase(
            "proto_lc",
            "prototype-only upsampled to Lc",
            lat,
            lon,
            codes_scorer((proto, 1.0)),
            code_bytes,
        ),
        MethodDatabase("aerial", "aerial-only", lat, lon, codes_scorer((aerial, 1.0)), code_bytes),
        MethodDatabase(
            "hybrid_k1",
            "hybrid κ = 1",
            lat,
            lon,
            codes_scorer((aerial, 1.0), (proto, 1.0)),
            code_bytes,
        ),
        MethodDatabase(
            "hybrid",
            f"hybrid, calibrated κ = {kappa:.3g}",
            lat,
            lon,
            codes_scorer((aerial, 1.0), (proto, kappa)),
            code_bytes,
            search=search,
        ),
    ]


def ground_retrieval_method(
    train_embeddings: np.ndarray, train_lat: np.ndarray, train_lon: np.ndarray
) -> MethodDatabase:
    """MegaLoc-style baseline: nearest training ground image; answer = its position."""
    database = np.asarray(train_embeddings, dtype=np.float32)
    n, dim = database.shape
    return MethodDatabase(
        "ground_retrieval",
        "baseline: ground-image retrieval",
        np.asarray(train_lat, dtype=np.float64),
        np.asarray(train_lon, dtype=np.float64),
        codes_scorer((database, 1.0)),
        n * dim * 2 + n * 16,  # float16 descriptor + float64 lat/lon per image
    )


def histogram_method(
    cells: np.ndarray, cell_histograms: np.ndarray, score: Scorer
) -> MethodDatabase:
    """The naive colour-histogram cross-view matcher over the same level-Lc cells."""

    lat, lon = cell_to_latlng(np.asarray(cells, dtype=np.uint64))
    n, bins = cell_histograms.shape
    return MethodDatabase(
        "colour_histogram",
        "baseline: colour-histogram cross-view",
        lat,
        lon,
        score,
        n * bins * 4 + n * 8,
        query_kind="histogram",
    )
