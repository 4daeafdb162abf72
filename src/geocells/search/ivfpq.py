"""The searcher over the fused cell codes: exact (``scoring.exact``) or compressed (faiss IVF-PQ).

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

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from geocells.io import atomic_write
from geocells.scoring.exact import (
    check_database,
    check_finite_rows,
    check_queries,
    exact_search,
    fused_codes,
    rerank_exact,
    top_k_over_chunks,
)
from geocells.scoring.memmap import advise_random_access
from geocells.search.coarse import coarse_index, pow2_near, two_level_centroids
from geocells.search.index_meta import SearchIndexMeta

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "exact", "ivfpq")
LAYOUTS = ("concat", "sum")
COARSE = ("auto", "flat", "hnsw")
# Target inverted-list length of the automatic nlist.
LIST_SIZE = 512
# Above this many lists the coarse quantiser is an HNSW graph over two-level k-means
# centroids: flat k-means and flat assignment cost O(N · nlist) and would dominate.
FLAT_MAX_LISTS = 4096
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
        nlist = self.nlist or pow2_near(num_cells / LIST_SIZE, low=16, high=65_536)
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
    check_finite_rows(train, 0, "sampled training")
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
    # faiss prints a warning to stderr when a k-means has fewer than 39 points per centroid
    # (small databases: 16 PQ centroids from < 624 rows); it is logged here instead.
    for what, clustering, k in (("coarse", index.cp, params.nlist), ("PQ", index.pq.cp, 16)):
        if len(train) < k * clustering.min_points_per_centroid:
            logger.debug("%s k-means: %d points for %d centroids", what, len(train), k)
        clustering.min_points_per_centroid = 1
    index.train(train)
    del train
    starts = range(0, num_cells, params.add_chunk)
    for start in tqdm(starts, desc="index add", unit="chunk", disable=None if progress else True):
        stop = min(start + params.add_chunk, num_cells)
        block_a, block_p = np.asarray(aerial[start:stop]), np.asarray(proto[start:stop])
        check_finite_rows(block_a, start, "aerial")
        check_finite_rows(block_p, start, "proto")
        index.add(_index_vectors(block_a, block_p, params.layout, kappa))
    return index


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
        check_database(aerial, proto)
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
        check_database(aerial, proto)
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
                check_finite_rows(np.asarray(aerial[start : start + 262_144]), start, "aerial")
                check_finite_rows(np.asarray(proto[start : start + 262_144]), start, "proto")
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
        queries = check_queries(queries, self.dim, top_k)
        if self.backend == "exact":
            if self.num_cells * self.dim * 4 > FUSED_CACHE_MAX_BYTES:
                return exact_search(
                    queries, aerial=self.aerial, proto=self.proto, kappa=self.kappa, top_k=top_k
                )
            # Small database: fuse and convert the codes once per kappa, not on every call
            # (the float16 -> float32 conversion dominated single-query latency).
            if self._fused is None or self._fused[0] != self.kappa:
                codes = fused_codes(self.aerial, self.proto, self.kappa, 0, self.num_cells)
                self._fused = (self.kappa, codes)
            k = min(top_k, self.num_cells)
            return top_k_over_chunks([(0, self._fused[1])], queries, k, self.aerial, self.proto)
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
        """Write ``path`` (faiss index, ivfpq only) and ``path.json`` (``SearchIndexMeta``)."""
        import faiss

        path = Path(path)
        meta = SearchIndexMeta(
            backend=self.backend,
            index_kappa=self.index_kappa,
            num_cells=self.num_cells,
            dim=self.dim,
            params=asdict(self.params) if self.params else None,
        )
        if self.index is not None:
            with atomic_write(path) as tmp:
                faiss.write_index(self.index, str(tmp))
        meta.write(SearchIndexMeta.path_of(path))
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        aerial: np.ndarray,
        proto: np.ndarray,
        kappa: float,
        meta: SearchIndexMeta | None = None,
    ) -> CellSearcher:
        """Open a saved searcher over the same database rows it was built from (``meta``:
        its sidecar, when the caller has read it already)."""
        import faiss

        path = Path(path)
        if meta is None:
            meta_path = SearchIndexMeta.path_of(path)
            if not meta_path.is_file():
                raise FileNotFoundError(f"search index metadata {meta_path} not found")
            meta = SearchIndexMeta.read(meta_path)
        check_database(aerial, proto)
        if (meta.num_cells, meta.dim) != tuple(aerial.shape):
            raise ValueError(
                f"{path} was built for {meta.num_cells} x {meta.dim} codes, "
                f"the database is {aerial.shape[0]} x {aerial.shape[1]}"
            )
        if meta.backend == "exact":
            return cls(aerial, proto, kappa, "exact")
        params = IVFPQParams(**meta.params)
        if params.layout == "sum" and float(kappa) != meta.index_kappa:
            raise ValueError(
                f"{path} was built for kappa={meta.index_kappa} (layout 'sum'); "
                f"rebuild it for kappa={kappa}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"search index {path} not found")
        index = faiss.read_index(str(path))
        if index.ntotal != aerial.shape[0]:
            raise ValueError(f"{path} holds {index.ntotal} vectors, expected {aerial.shape[0]}")
        return cls(aerial, proto, kappa, "ivfpq", index, params, index_kappa=meta.index_kappa)


def _check_kappa(kappa: float) -> float:
    """kappa as a finite float; ValueError otherwise."""
    kappa = float(kappa)
    if not math.isfinite(kappa):
        raise ValueError(f"kappa must be finite, got {kappa}")
    return kappa
