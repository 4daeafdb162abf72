"""Nearest-cell search over the fused cell codes: exact (chunked) and compressed (faiss IVF-PQ).

The score of cell ``i`` for a query ``q`` is ``aerial_i · q + kappa * proto_i · q`` (the
codes are not re-normalised; DESIGN §1). Both backends read the database from the float16
arrays it is stored in (memmaps are fine) and never hold a float32 copy of a large one.

- ``exact``: chunked matrix products over the float16 rows, running top-k merge.
- ``ivfpq``: faiss IVF with 4-bit fast-scan product quantisation, then exact re-scoring of
  the top ``rerank`` candidates from the float16 rows. Two layouts (docs/scaling.md has
  the measurements behind the default):
  ``sum`` (default) indexes the fused code ``aerial + kappa * proto`` (D dims) — twice the
  PQ precision per byte and half the build time, but ``kappa`` is fixed at build time
  (another kappa needs a rebuild); ``concat`` indexes ``[aerial | proto]`` (2·D dims)
  searched with ``[q | kappa·q]``, so ``kappa`` may change at query time.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "exact", "ivfpq")
LAYOUTS = ("concat", "sum")
COARSE = ("auto", "flat", "hnsw")
# Target inverted-list length of the automatic nlist.
LIST_SIZE = 512
# Above this many lists the coarse quantiser is an HNSW graph over two-level k-means
# centroids: flat k-means and flat assignment cost O(N · nlist) and would dominate.
FLAT_MAX_LISTS = 4096
KMEANS_ITERATIONS = 10
HNSW_LINKS = 32  # graph degree of the HNSW coarse quantiser
HNSW_EF_CONSTRUCTION = 80
# Search breadth when assigning database rows to lists. At 65,536 lists, 32 put 0.9 % of
# the rows in a list other than their nearest centroid's, where queries never look (top-1
# agreement stalled at 0.99); 128 misplaces 0.01 % at ~3x the assignment time.
HNSW_EF_ADD = 128
PQ_TRAIN_MAX = 131_072  # vectors used to train the product quantiser
# "auto" uses exact search up to this many cells, the compressed index above.
AUTO_EXACT_MAX_CELLS = 200_000
# The exact backend keeps float32 fused codes in memory up to this size (faster queries).
FUSED_CACHE_MAX_BYTES = 256 * 2**20
_FORMAT_VERSION = 2
# Bumped when the same parameters build a different index (benchmarks key their cache on it).
BUILD_VERSION = 2


@dataclass
class IVFPQParams:
    """Parameters of the compressed backend; 0 / "auto" means "pick from the database size"."""

    layout: str = "sum"  # "sum": index aerial + kappa proto; "concat": index [aerial | proto]
    nlist: int = 0  # inverted lists (coarse cells); 0 -> about N / 512, a power of two
    pq_m: int = 0  # 4-bit sub-quantisers; 0 -> D/2 (64 B per cell at D=256)
    # Coarse quantiser: "flat" (exact, k-means), "hnsw" (graph over two-level k-means
    # centroids, for many lists), "auto" = hnsw above FLAT_MAX_LISTS lists.
    coarse: str = "auto"
    nprobe: int = 0  # lists visited per query; 0 -> from nlist (docs/scaling.md)
    # HNSW indexes: groups of lists scanned to find the nprobe lists; 0 -> a quarter.
    group_probe: int = 0
    rerank: int = 64  # candidates re-scored exactly from the float16 rows
    train_size: int = 0  # vectors sampled for training; 0 -> 32-64 per list, at most 2.2 M
    add_chunk: int = 262_144  # rows converted and added per step
    seed: int = 0

    def resolved(self, num_cells: int, dim: int) -> IVFPQParams:
        """Copy with the size-dependent defaults filled in (``dim`` = code dimension D)."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown index layout {self.layout!r}; expected one of {LAYOUTS}")
        if self.coarse not in COARSE:
            raise ValueError(f"unknown coarse quantiser {self.coarse!r}; expected one of {COARSE}")
        # Short lists: with noisy queries, the coarse step finds the right list far more
        # often per code scanned when lists are small (docs/scaling.md, "Coarse lists").
        nlist = self.nlist or _pow2_near(num_cells / LIST_SIZE, low=16, high=65_536)
        nlist = min(nlist, max(1, num_cells // 39))
        coarse = self.coarse
        if coarse == "auto":
            coarse = "hnsw" if nlist > FLAT_MAX_LISTS else "flat"
        nprobe = self.nprobe or _default_nprobe(nlist, coarse)
        pq_m = self.pq_m or dim // 2
        per_list = 64 if coarse == "flat" else 32
        train_size = self.train_size or min(num_cells, max(per_list * nlist, 20_000), 2_200_000)
        return replace(
            self, nlist=nlist, pq_m=pq_m, coarse=coarse, nprobe=nprobe, train_size=train_size
        )


def _default_nprobe(nlist: int, coarse: str) -> int:
    """Lists to visit, from the runs in docs/scaling.md ("Coarse lists"): 64 with a flat
    quantiser (<= 4,096 lists); 2 sqrt(nlist) with HNSW (181 at 8,192, 512 at 65,536)."""
    if coarse == "flat":
        return min(nlist, 64)
    return min(nlist, max(64, round(2 * math.sqrt(nlist))))


def _pow2_near(value: float, low: int, high: int) -> int:
    """The power of two nearest to ``value`` (in log space), clipped to [low, high]."""
    return int(min(max(2 ** round(math.log2(max(value, 1.0))), low), high))


def _check_database(aerial: np.ndarray, proto: np.ndarray) -> None:
    """Shapes of the two code arrays must agree; raise ValueError naming the mismatch."""
    if aerial.ndim != 2 or proto.ndim != 2:
        raise ValueError(f"aerial and proto must be 2-D, got {aerial.shape} and {proto.shape}")
    if aerial.shape != proto.shape:
        raise ValueError(f"aerial {aerial.shape} and proto {proto.shape} shapes differ")
    if aerial.shape[0] == 0:
        raise ValueError("the database has no cells")


def _check_queries(queries: np.ndarray, dim: int, top_k: int) -> np.ndarray:
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


def _check_finite_rows(block: np.ndarray, offset: int, name: str) -> None:
    """Raise ValueError naming the first non-finite database rows of ``block``."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        rows = (np.flatnonzero(bad)[:10] + offset).tolist()
        raise ValueError(f"{name} codes contain NaN or inf (rows {rows})")


def _merge_top_k(
    best_scores: np.ndarray, best_rows: np.ndarray, scores: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidate [Q, m] scores/rows into the running [Q, k] best (unsorted)."""
    all_scores = np.concatenate([best_scores, scores], axis=1)
    all_rows = np.concatenate([best_rows, rows], axis=1)
    if all_scores.shape[1] <= k:
        return all_scores, all_rows
    keep = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(all_scores, keep, 1), np.take_along_axis(all_rows, keep, 1)


def _sort_desc(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each query's results by decreasing score (ties by row)."""
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def exact_search(
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    queries: np.ndarray,
    top_k: int,
    chunk_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over float16 rows in chunks: -> (scores f32 [Q, k], rows i64 [Q, k])."""
    _check_database(aerial, proto)
    num_cells, dim = aerial.shape
    queries = _check_queries(queries, dim, top_k)
    # Keep the [chunk, Q] float32 score block near 64 MB whatever the batch size.
    chunk_rows = chunk_rows or int(np.clip(16_000_000 // max(len(queries), 1), 8_192, 262_144))
    chunks = (
        (start, _fused_codes(aerial, proto, kappa, start, min(start + chunk_rows, num_cells)))
        for start in range(0, num_cells, chunk_rows)
    )
    return _top_k_over_chunks(chunks, queries, min(top_k, num_cells), aerial, proto)


def _fused_codes(
    aerial: np.ndarray, proto: np.ndarray, kappa: float, start: int, stop: int
) -> np.ndarray:
    """Rows start..stop of the cell codes z = a + kappa p as float32 [n, D]."""
    # astype always copies: the in-place add must never write into the caller's rows.
    codes = aerial[start:stop].astype(np.float32)
    codes += np.float32(kappa) * proto[start:stop].astype(np.float32)
    return codes


def _top_k_over_chunks(chunks, queries, k, aerial, proto) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k of ``queries`` over ``(first_row, codes f32 [n, D])`` chunks, sorted."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    q_t = queries.T
    for start, codes in chunks:
        stop = start + len(codes)
        block = codes @ q_t
        if not np.isfinite(block).all():
            _check_finite_rows(np.asarray(aerial[start:stop]), start, "aerial")
            _check_finite_rows(np.asarray(proto[start:stop]), start, "proto")
            raise ValueError(f"non-finite scores in database rows {start}..{stop}")
        scores = block.T  # [Q, n]
        if scores.shape[1] > k:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            cand_scores = np.take_along_axis(scores, part, 1)
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            cand_scores = scores
        best_scores, best_rows = _merge_top_k(
            best_scores, best_rows, cand_scores, part.astype(np.int64) + start, k
        )
    return _sort_desc(best_scores, best_rows)


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
    k = min(top_k, scores.shape[1])
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, rows = np.take_along_axis(scores, part, 1), np.take_along_axis(rows, part, 1)
    return _sort_desc(scores, rows)


def _index_vectors(aerial_block, proto_block, layout: str, kappa: float) -> np.ndarray:
    """Database vectors the index holds: [aerial | proto] (2D) or aerial + kappa proto (D)."""
    if layout == "concat":
        joined = np.concatenate([aerial_block, proto_block], axis=1)
        return np.ascontiguousarray(joined, dtype=np.float32)
    summed = np.asarray(aerial_block, dtype=np.float32)
    summed += np.float32(kappa) * np.asarray(proto_block, dtype=np.float32)
    return summed


def _index_queries(queries: np.ndarray, layout: str, kappa: float) -> np.ndarray:
    """Query vectors for the index: [q | kappa q] (concat, IP = a·q + kappa p·q) or q (sum)."""
    if layout == "sum":
        return queries
    return np.ascontiguousarray(np.concatenate([queries, np.float32(kappa) * queries], axis=1))


def build_ivfpq_index(
    aerial: np.ndarray, proto: np.ndarray, params: IVFPQParams, kappa: float, progress=True
):
    """Train faiss IVF-PQ (4-bit fast scan) on a sample and add every row in chunks."""
    import faiss
    from tqdm import tqdm

    num_cells, dim = aerial.shape
    index_dim = 2 * dim if params.layout == "concat" else dim
    if index_dim % params.pq_m:
        raise ValueError(f"pq_m={params.pq_m} must divide the index dimension {index_dim}")
    rng = np.random.default_rng(params.seed)
    sample = np.sort(rng.choice(num_cells, size=params.train_size, replace=False))
    train = _index_vectors(aerial[sample], proto[sample], params.layout, kappa)
    _check_finite_rows(train, 0, "sampled training")
    if params.coarse == "hnsw":
        logger.info(
            "two-level k-means: %d coarse centroids from %d vectors", params.nlist, len(train)
        )
        centroids = two_level_centroids(train, params.nlist, params.seed, progress)
        quantizer = faiss.IndexHNSWFlat(index_dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        quantizer.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        quantizer.add(centroids)  # trained: the IVF's own training now skips the quantiser
        quantizer.hnsw.efSearch = HNSW_EF_ADD
        train = train[rng.choice(len(train), min(len(train), PQ_TRAIN_MAX), replace=False)]
    else:
        quantizer = faiss.IndexFlatIP(index_dim)
    index = faiss.IndexIVFPQFastScan(
        quantizer, index_dim, params.nlist, params.pq_m, 4, faiss.METRIC_INNER_PRODUCT
    )
    index.own_fields = True
    quantizer.this.disown()  # the index now owns and frees its quantiser
    logger.info("training IVF%d,PQ%dx4fs on %d vectors", params.nlist, params.pq_m, len(train))
    index.train(train)
    del train
    starts = range(0, num_cells, params.add_chunk)
    for start in tqdm(starts, desc="index add", unit="chunk", disable=not progress):
        stop = min(start + params.add_chunk, num_cells)
        block_a, block_p = np.asarray(aerial[start:stop]), np.asarray(proto[start:stop])
        _check_finite_rows(block_a, start, "aerial")
        _check_finite_rows(block_p, start, "proto")
        index.add(_index_vectors(block_a, block_p, params.layout, kappa))
    return index


def two_level_centroids(
    sample: np.ndarray, nlist: int, seed: int = 0, progress: bool = False
) -> np.ndarray:
    """``nlist`` unit-norm coarse centroids [nlist, D] of ``sample`` by two-level k-means.

    Spherical k-means into ~sqrt(nlist) groups, then each group into a share of the
    ``nlist`` centroids proportional to its size: O(N · sqrt(nlist)) instead of the
    O(N · nlist) of flat k-means, which is what makes 65,536 lists trainable on 2 cores.
    """
    import faiss
    from tqdm import tqdm

    if len(sample) < nlist:
        raise ValueError(f"{len(sample)} training vectors are too few for nlist={nlist}")
    dim = sample.shape[1]
    groups = _pow2_near(math.sqrt(nlist), low=1, high=nlist)
    options = {"niter": KMEANS_ITERATIONS, "spherical": True, "min_points_per_centroid": 1}
    top = faiss.Kmeans(dim, groups, seed=seed, **options)
    top.train(sample)
    _, assignment = top.index.search(sample, 1)
    assignment = assignment[:, 0]
    shares = _proportional_shares(np.bincount(assignment, minlength=groups), nlist)
    parts = []
    for group in tqdm(range(groups), desc="coarse k-means", unit="group", disable=not progress):
        members = sample[assignment == group]
        if shares[group] == len(members):
            parts.append(members)
        elif shares[group] > 0:
            sub = faiss.Kmeans(dim, int(shares[group]), seed=seed + 1 + group, **options)
            sub.train(members)
            parts.append(sub.centroids)
    centroids = np.concatenate(parts).astype(np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


def _proportional_shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over groups in proportion to ``sizes``: >= 1 per non-empty group,
    never more than the group's size, summing exactly to ``total`` (<= sizes.sum())."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if total > sizes.sum():
        raise ValueError(f"cannot split {total} centroids over {sizes.sum()} vectors")
    exact = sizes * (total / sizes.sum())
    shares = np.minimum(np.maximum(np.floor(exact).astype(np.int64), sizes > 0), sizes)
    while shares.sum() != total:  # a few passes: hand out (or take back) one at a time
        if shares.sum() < total:
            room = np.where(shares < sizes, exact - shares, -np.inf)
            shares[int(np.argmax(room))] += 1
        else:
            excess = np.where(shares > 1, shares - exact, -np.inf)
            shares[int(np.argmax(excess))] -= 1
    return shares


class CellSearcher:
    """Top-k cells for query embeddings over float16 aerial/proto codes.

    ``searcher = CellSearcher.build(aerial, proto, kappa)``;
    ``scores, rows = searcher.search(queries, top_k)``; ``searcher.kappa`` may be changed
    at any time (both backends score with it at query time).
    """

    def __init__(
        self,
        aerial: np.ndarray,
        proto: np.ndarray,
        kappa: float,
        backend: str,
        index=None,
        params: IVFPQParams | None = None,
        index_kappa: float | None = None,
    ) -> None:
        _check_database(aerial, proto)
        if backend not in ("exact", "ivfpq"):
            raise ValueError(f"unknown search backend {backend!r}; expected 'exact' or 'ivfpq'")
        if backend == "ivfpq" and index is None:
            raise ValueError("the ivfpq backend needs a faiss index; use CellSearcher.build")
        self.aerial, self.proto = aerial, proto
        if backend == "ivfpq":  # re-ranking reads a few scattered rows per query
            advise_random_access(aerial)
            advise_random_access(proto)
        self._fused: tuple[float, np.ndarray] | None = None  # (kappa, float32 codes)
        self.kappa = kappa
        self.backend = backend
        self.index = index
        self.params = params
        # The kappa baked into a "sum" index; searching it with another kappa is an error.
        self.index_kappa = index_kappa
        # HNSW indexes: lists are found through an IVF over their centroids (coarse_index).
        self._coarse = coarse_index(index) if index is not None else None

    @property
    def kappa(self) -> float:
        """Weight of the prototype part in the score; may be changed between searches."""
        return self._kappa

    @kappa.setter
    def kappa(self, value: float) -> None:
        self._kappa = _check_kappa(value)

    @property
    def num_cells(self) -> int:
        """Number of database rows."""
        return int(self.aerial.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.aerial.shape[1])

    @classmethod
    def build(
        cls,
        aerial: np.ndarray,
        proto: np.ndarray,
        kappa: float,
        backend: str = "auto",
        progress: bool = False,
        **params,
    ) -> CellSearcher:
        """Build a searcher; ``params`` are IVFPQParams fields (compressed backend only)."""
        _check_database(aerial, proto)
        if backend not in BACKENDS:
            raise ValueError(f"unknown search backend {backend!r}; expected one of {BACKENDS}")
        known = {f.name for f in fields(IVFPQParams)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown search parameters {unknown}; known: {sorted(known)}")
        num_cells = aerial.shape[0]
        if backend == "auto":
            backend = "exact" if num_cells <= AUTO_EXACT_MAX_CELLS else "ivfpq"
        if backend == "exact":
            for start in range(0, num_cells, 262_144):
                _check_finite_rows(np.asarray(aerial[start : start + 262_144]), start, "aerial")
                _check_finite_rows(np.asarray(proto[start : start + 262_144]), start, "proto")
            return cls(aerial, proto, kappa, "exact")
        kappa = _check_kappa(kappa)
        resolved = IVFPQParams(**params).resolved(num_cells, aerial.shape[1])
        if num_cells < resolved.nlist:
            raise ValueError(f"{num_cells} cells are too few for nlist={resolved.nlist}")
        index = build_ivfpq_index(aerial, proto, resolved, kappa, progress=progress)
        return cls(aerial, proto, kappa, "ivfpq", index, resolved, index_kappa=kappa)

    def search(
        self, queries: np.ndarray, top_k: int = 5, batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Queries float32 [Q, D] -> (scores float32 [Q, k], rows int64 [Q, k]), best first.

        Rows are database row numbers; where fewer than k cells were found the row is -1
        and the score -inf.
        """
        queries = _check_queries(queries, self.dim, top_k)
        if self.backend == "exact":
            if self.num_cells * self.dim * 4 > FUSED_CACHE_MAX_BYTES:
                return exact_search(self.aerial, self.proto, self.kappa, queries, top_k)
            # Small database: fuse and convert the codes once per kappa, not on every call
            # (the float16 -> float32 conversion dominated single-query latency).
            if self._fused is None or self._fused[0] != self.kappa:
                codes = _fused_codes(self.aerial, self.proto, self.kappa, 0, self.num_cells)
                self._fused = (self.kappa, codes)
            k = min(top_k, self.num_cells)
            return _top_k_over_chunks([(0, self._fused[1])], queries, k, self.aerial, self.proto)
        layout = self.params.layout
        if layout == "sum" and self.kappa != self.index_kappa:
            raise ValueError(
                f"this index was built for kappa={self.index_kappa} (layout 'sum'); "
                f"searching with kappa={self.kappa} needs a rebuild"
            )
        self.index.nprobe = self.params.nprobe
        if self._coarse is not None:
            self._coarse.nprobe = self.params.group_probe or self._coarse.nlist // 4
        shortlist = max(top_k, self.params.rerank)
        all_scores, all_rows = [], []
        for start in range(0, len(queries), batch_size):
            batch = queries[start : start + batch_size]
            vectors = _index_queries(batch, layout, self.kappa)
            if self._coarse is None:
                _, candidates = self.index.search(vectors, shortlist)
            else:
                centroid_scores, lists = self._coarse.search(vectors, self.params.nprobe)
                _, candidates = self.index.search_preassigned(
                    vectors, shortlist, lists, centroid_scores
                )
            scores, rows = rerank_exact(
                self.aerial, self.proto, self.kappa, batch, candidates, top_k
            )
            all_scores.append(scores)
            all_rows.append(rows)
        return np.concatenate(all_scores), np.concatenate(all_rows)

    def memory_bytes(self) -> int:
        """Bytes the searcher keeps in RAM beyond the memmaps (the faiss index), 0 for exact."""
        if self.index is None:
            return 0
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (faiss index, ivfpq only) and ``path.json`` (backend, params)."""
        import faiss

        path = Path(path)
        meta = {
            "format_version": _FORMAT_VERSION,
            "backend": self.backend,
            "index_kappa": self.index_kappa,
            "num_cells": self.num_cells,
            "dim": self.dim,
            "params": asdict(self.params) if self.params else None,
        }
        if self.index is not None:
            tmp = path.with_name(path.name + ".tmp")
            faiss.write_index(self.index, str(tmp))
            os.replace(tmp, path)
        meta_path = _meta_path(path)
        tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
        tmp_meta.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_meta, meta_path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, aerial: np.ndarray, proto: np.ndarray, kappa: float
    ) -> CellSearcher:
        """Open a saved searcher over the same database rows it was built from."""
        import faiss

        path = Path(path)
        meta_path = _meta_path(path)
        if not meta_path.is_file():
            raise FileNotFoundError(f"search index metadata {meta_path} not found")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format {meta.get('format_version')}")
        _check_database(aerial, proto)
        if (meta["num_cells"], meta["dim"]) != tuple(aerial.shape):
            raise ValueError(
                f"{path} was built for {meta['num_cells']} x {meta['dim']} codes, "
                f"the database is {aerial.shape[0]} x {aerial.shape[1]}"
            )
        if meta["backend"] == "exact":
            return cls(aerial, proto, kappa, "exact")
        if meta["params"]["layout"] == "sum" and float(kappa) != meta["index_kappa"]:
            raise ValueError(
                f"{path} was built for kappa={meta['index_kappa']} (layout 'sum'); "
                f"rebuild it for kappa={kappa}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"search index {path} not found")
        index = faiss.read_index(str(path))
        if index.ntotal != aerial.shape[0]:
            raise ValueError(f"{path} holds {index.ntotal} vectors, expected {aerial.shape[0]}")
        params = IVFPQParams(**meta["params"])
        return cls(aerial, proto, kappa, "ivfpq", index, params, index_kappa=meta["index_kappa"])


def advise_random_access(array: np.ndarray) -> bool:
    """Tell the kernel a memmap is read at random rows (no read-ahead); True if done.

    Re-ranking reads ~64 rows of 512 B per query; with the default read-ahead each page
    fault pulls in up to ~128 kB around the row, which dominated query time once the
    codes no longer fit the page cache (docs/scaling.md). Arrays in RAM are left alone.
    """
    import mmap

    handle = getattr(array, "_mmap", None)
    if handle is None:
        base = getattr(array, "base", None)
        handle = getattr(base, "_mmap", None) if base is not None else None
    if handle is None or not hasattr(handle, "madvise"):
        return False
    handle.madvise(mmap.MADV_RANDOM)
    return True


def _memmap_handle(array: np.ndarray):
    """(mmap object, byte position of element 0 inside it) of a numpy memmap, else None."""
    handle = getattr(array, "_mmap", None)
    if handle is None or getattr(array, "offset", None) is None:
        return None
    import mmap

    # numpy maps from the allocation-granularity boundary below the data offset.
    return handle, array.offset % mmap.ALLOCATIONGRANULARITY


def prefetch_rows(array: np.ndarray, rows: np.ndarray) -> int:
    """Ask the kernel to start reading the pages of ``rows`` of a 2-D memmap, all at once.

    Re-ranking then finds them in the page cache instead of faulting them in one by one:
    the disk serves the reads concurrently. Returns the number of rows advised (0 for an
    array in RAM or a memmap this cannot address).
    """
    import mmap

    found = _memmap_handle(array)
    if found is None or array.ndim != 2 or not array.flags.c_contiguous:
        return 0
    handle, origin = found
    row_bytes = array.shape[1] * array.itemsize
    page = mmap.PAGESIZE
    for row in np.asarray(rows, dtype=np.int64):
        first = origin + int(row) * row_bytes
        start = first - first % page
        length = min(first + row_bytes - start, len(handle) - start)
        handle.madvise(mmap.MADV_WILLNEED, start, length)
    return len(rows)


def coarse_index(index):
    """Query-time list finder of an index with an HNSW quantiser, else None.

    The HNSW graph assigns rows to lists well (``HNSW_EF_ADD``) but, asked for the
    hundreds of lists a noisy query must visit, it returns only ~90 % of the true top
    ones (0.983 top-1 agreement at nprobe 512 of 65,536 lists). A flat IVF over the
    centroids themselves (√nlist groups, a quarter of them scanned) finds them more
    completely in the same ~1.3 ms (0.992; docs/scaling.md, "Coarse lists").
    """
    import faiss

    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexHNSW):
        return None
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    groups = _pow2_near(math.sqrt(len(centroids)), low=1, high=len(centroids))
    dim = centroids.shape[1]
    top = faiss.IndexFlatIP(dim)
    finder = faiss.IndexIVFFlat(top, dim, groups, faiss.METRIC_INNER_PRODUCT)
    finder.own_fields = True
    top.this.disown()  # the finder now owns and frees it
    finder.cp.spherical = True
    finder.cp.seed = 0
    finder.train(centroids)
    finder.add(centroids)  # ids = list numbers
    return finder


def _meta_path(path: Path) -> Path:
    """Sidecar JSON next to the index file: ``index.faiss`` -> ``index.faiss.json``."""
    return path.with_name(path.name + ".json")


def _check_kappa(kappa: float) -> float:
    """kappa as a finite float; ValueError otherwise."""
    kappa = float(kappa)
    if not math.isfinite(kappa):
        raise ValueError(f"kappa must be finite, got {kappa}")
    return kappa
