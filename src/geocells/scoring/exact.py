"""The one exact search: top-k of ``sim_A + κ · sim_P`` over the float16 database rows.

Every exact top-k in geocells goes through ``exact_search`` (the Localizer's exact
backend, calibration's confidence fit, eval, the benchmarks), so they all break ties the
same way: by decreasing score, then by increasing row. Chunked matrix products keep a
float32 block of about 64 MB whatever the database size; the codes are never copied whole.
"""

from __future__ import annotations

import numpy as np

from geocells.scoring.memmap import prefetch_rows


def check_database(aerial: np.ndarray, proto: np.ndarray) -> None:
    """Shapes of the two code arrays must agree; raise ValueError naming the mismatch."""
    if aerial.ndim != 2 or proto.ndim != 2:
        raise ValueError(f"aerial and proto must be 2-D, got {aerial.shape} and {proto.shape}")
    if aerial.shape != proto.shape:
        raise ValueError(f"aerial {aerial.shape} and proto {proto.shape} shapes differ")
    if aerial.shape[0] == 0:
        raise ValueError("the database has no cells")


def check_queries(queries: np.ndarray, dim: int, top_k: int) -> np.ndarray:
    """Validated float32 [Q, D] queries; ValueError on wrong shape, NaN/inf or bad top_k."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must be [Q, {dim}], got shape {queries.shape}")
    bad = ~np.isfinite(queries).all(axis=1)
    if bad.any():
        raise ValueError(f"queries contain NaN or inf (rows {np.flatnonzero(bad)[:10].tolist()})")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return np.ascontiguousarray(queries)


def check_finite_rows(block: np.ndarray, offset: int, name: str) -> None:
    """Raise ValueError naming the first non-finite database rows of ``block``."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        rows = (np.flatnonzero(bad)[:10] + offset).tolist()
        raise ValueError(f"{name} codes contain NaN or inf (rows {rows})")


def block_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns [Q, min(k, n)] of the k best of each row of ``scores [Q, n]`` (unsorted),
    exact under the tie rule: where equal scores straddle the cut, the lower columns win.

    ``argpartition`` alone keeps an arbitrary member of such a tie; ties are common (cells
    without aerial imagery that share a parent prototype score alike), so rows whose
    k-th score is tied beyond the cut are settled by a sort of that row.
    """
    n = scores.shape[1]
    if n <= k:
        return np.broadcast_to(np.arange(n), scores.shape).copy()
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, part, 1).min(axis=1)
    straddle = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
    for q in straddle:
        part[q] = np.lexsort((np.arange(n), -scores[q]))[:k]
    return part


def merge_top_k(
    best_scores: np.ndarray, best_rows: np.ndarray, scores: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidate [Q, m] scores/rows into the running [Q, k] best (sorted: higher
    score, then lower row)."""
    all_scores = np.concatenate([best_scores, scores], axis=1)
    all_rows = np.concatenate([best_rows, rows], axis=1)
    keep = np.lexsort((all_rows, -all_scores), axis=1)[:, :k]
    return np.take_along_axis(all_scores, keep, 1), np.take_along_axis(all_rows, keep, 1)


def sort_desc(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each query's results by decreasing score (ties by row)."""
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def exact_search(
    queries: np.ndarray,
    *,
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    top_k: int,
    chunk_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cells of ``queries [Q, D]`` by ``aerial · q + kappa proto · q``, best first.

    Returns ``(scores float32 [Q, k], rows int64 [Q, k])`` with ``k = min(top_k, N)``;
    ties are broken by the lower row. ``chunk_rows`` (0: about 64 MB of scores per block).
    """
    check_database(aerial, proto)
    num_cells, dim = aerial.shape
    queries = check_queries(queries, dim, top_k)
    # Keep the [chunk, Q] float32 score block near 64 MB whatever the batch size.
    chunk_rows = chunk_rows or int(np.clip(16_000_000 // max(len(queries), 1), 8_192, 262_144))
    chunks = (
        (start, fused_codes(aerial, proto, kappa, start, min(start + chunk_rows, num_cells)))
        for start in range(0, num_cells, chunk_rows)
    )
    return top_k_over_chunks(chunks, queries, min(top_k, num_cells), aerial, proto)


def search_codes(
    queries: np.ndarray, codes: np.ndarray, top_k: int, chunk_rows: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of one code matrix ``codes [N, D]`` by ``codes · q`` (prototype-only or
    aerial-only retrieval), with ``exact_search``'s tie rule -> ``(scores [Q, k], rows [Q, k])``."""
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes must be a non-empty [N, D] array, got shape {codes.shape}")
    queries = check_queries(queries, codes.shape[1], top_k)
    chunks = (
        (start, np.asarray(codes[start : start + chunk_rows], dtype=np.float32))
        for start in range(0, len(codes), chunk_rows)
    )
    return top_k_over_chunks(chunks, queries, min(top_k, len(codes)), codes, codes)


def fused_codes(
    aerial: np.ndarray, proto: np.ndarray, kappa: float, start: int, stop: int
) -> np.ndarray:
    """Rows start..stop of the cell codes z = a + kappa p as float32 [n, D]."""
    # astype always copies: the in-place add must never write into the caller's rows.
    codes = aerial[start:stop].astype(np.float32)
    codes += np.float32(kappa) * proto[start:stop].astype(np.float32)
    return codes


def top_k_over_chunks(chunks, queries, k, aerial, proto) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k of ``queries`` over ``(first_row, codes f32 [n, D])`` chunks, sorted."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    q_t = queries.T
    for start, codes in chunks:
        stop = start + len(codes)
        block = codes @ q_t
        if not np.isfinite(block).all():
            check_finite_rows(np.asarray(aerial[start:stop]), start, "aerial")
            check_finite_rows(np.asarray(proto[start:stop]), start, "proto")
            raise ValueError(f"non-finite scores in database rows {start}..{stop}")
        scores = block.T  # [Q, n]
        part = block_top_k(scores, k)
        best_scores, best_rows = merge_top_k(
            best_scores, best_rows, np.take_along_axis(scores, part, 1), part + start, k
        )
    return sort_desc(best_scores, best_rows)


def rerank_exact(
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    queries: np.ndarray,
    candidates: np.ndarray,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of candidate rows [Q, m] (-1 = none) -> best (scores [Q, k], rows [Q, k])."""
    valid = candidates >= 0
    if not valid.any():
        k = min(top_k, candidates.shape[1])
        shape = (len(candidates), k)
        return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64)
    unique_rows = np.unique(candidates[valid])  # sorted: memmap reads walk the file forwards
    prefetch_rows(aerial, unique_rows)
    prefetch_rows(proto, unique_rows)
    codes_a = np.asarray(aerial[unique_rows], dtype=np.float32)
    codes_p = np.asarray(proto[unique_rows], dtype=np.float32)
    position = np.searchsorted(unique_rows, np.where(valid, candidates, unique_rows[:1]))
    codes_a += np.float32(kappa) * codes_p  # fused codes of the unique candidates [U, D]
    if not np.isfinite(codes_a).all():
        raise ValueError("database rows among the candidates contain NaN or inf")
    scores = np.matmul(codes_a[position], queries[:, :, None])[..., 0]  # [Q, m]
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    rows = np.where(valid, candidates, -1).astype(np.int64)
    keep = np.lexsort((rows, -scores), axis=1)[:, : min(top_k, scores.shape[1])]
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)
