"""The searcher over the fused cell codes: exact (``scoring.exact``) or compressed (faiss IVF-PQ).

The score of cell ``i`` for a query ``q`` is ``aerial_i · q + kappa * proto_i · q`` (the
codes are not re-normalised; DESIGN §1). Both backends read the database from the float16
arrays it is stored in (memmaps are fine) and never hold a float32 copy of a large one.

- ``exact``: chunked matrix products over the float16 rows, running top-k merge.
- ``ivfpq``: faiss IVF with 4-bit fast-scan product quantisation (32 B per cell at D = 256),
  then the top ``rerank`` candidates re-scored from an 8-bit copy of the fused codes in a
  file beside the index (``search.refine``), and the best ``exact_rerank`` of those
  exactly from the float16 rows. Indexes built before issue 23 (64 B codes, no refine
  file, ``rerank`` rows re-scored exactly) still load and search as they were built.
  Two layouts (docs/scaling.md has the measurements behind the defaults):
  ``sum`` (default) indexes the fused code ``aerial + kappa * proto`` (D dims) — twice the
  PQ precision per byte and half the build time, but ``kappa`` is fixed at build time
  (another kappa needs a rebuild); ``concat`` indexes ``[aerial | proto]`` (2·D dims)
  searched with ``[q | kappa·q]``, so ``kappa`` may change at query time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, fields
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
from geocells.search.coarse import coarse_index, default_group_probe
from geocells.search.index_meta import SearchIndexMeta
from geocells.search.ivfpq_build import (  # noqa: F401 (re-exported: the search API)
    BUILD_VERSION,
    COARSE,
    LAYOUTS,
    IVFPQParams,
    build_ivfpq_index,
)
from geocells.search.refine import SQ8Refiner, check_warm_mode, refine_path

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "exact", "ivfpq")
# "auto" uses exact search up to this many cells, the compressed index above.
AUTO_EXACT_MAX_CELLS = 200_000
# The exact backend keeps float32 fused codes in memory up to this size (faster queries).
FUSED_CACHE_MAX_BYTES = 256 * 2**20


def _index_queries(queries: np.ndarray, layout: str, kappa: float) -> np.ndarray:
    """Query vectors for the index: [q | kappa q] (concat, IP = a·q + kappa p·q) or q (sum)."""
    if layout == "sum":
        return queries
    return np.ascontiguousarray(np.concatenate([queries, np.float32(kappa) * queries], axis=1))


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
        refiner: SQ8Refiner | None = None,
    ) -> None:
        check_database(aerial, proto)
        if backend not in ("exact", "ivfpq"):
            raise ValueError(f"unknown search backend {backend!r}; expected 'exact' or 'ivfpq'")
        if backend == "ivfpq" and index is None:
            raise ValueError("the ivfpq backend needs a faiss index; use CellSearcher.build")
        if params is not None and params.refine == "sq8" and refiner is None:
            raise ValueError("this index re-scores with an sq8 refine file; none was given")
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
        self.refiner = refiner
        # HNSW indexes: lists are found through an IVF over their centroids (coarse_index).
        finder = params.finder if params is not None else "fp16"
        self._coarse = coarse_index(index, finder) if index is not None else None

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
        refine_file: str | Path | None = None,
        **params,
    ) -> CellSearcher:
        """Build a searcher; ``params`` are IVFPQParams fields (compressed backend only).

        ``refine_file``: where the sq8 refine codes are written while building (a large
        database's would not fit in RAM); ``save`` puts them beside the index otherwise.
        """
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
        refine_file = Path(refine_file) if refine_file is not None else None
        index, refiner = build_ivfpq_index(
            aerial, proto, resolved, kappa, progress=progress, refine_file=refine_file
        )
        return cls(aerial, proto, kappa, "ivfpq", index, resolved, kappa, refiner)

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
            groups = self._coarse.nlist
            default = default_group_probe(self.params.finder, groups)
            self._coarse.nprobe = min(groups, self.params.group_probe or default)
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
            if self.refiner is not None:
                keep = max(top_k, self.params.exact_rerank)
                candidates = self.refiner.rescore(batch, candidates, keep)
            scores, rows = rerank_exact(
                self.aerial, self.proto, self.kappa, batch, candidates, top_k
            )
            all_scores.append(scores)
            all_rows.append(rows)
        return np.concatenate(all_scores), np.concatenate(all_rows)

    def memory_bytes(self) -> int:
        """Bytes the searcher keeps in RAM beyond the memmaps (the faiss index, the list
        finder, the refine quantiser), 0 for exact. The refine codes are a memmap."""
        if self.index is None:
            return 0
        import faiss

        total = int(faiss.serialize_index(self.index).nbytes)
        if self._coarse is not None:
            total += int(faiss.serialize_index(self._coarse).nbytes)
        if self.refiner is not None:
            total += self.refiner.memory_bytes()
        return total

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (faiss index, ivfpq only), ``path.json`` (``SearchIndexMeta``) and,
        with the sq8 refine, ``path.sq8.npy`` (refine.refine_path)."""
        import faiss

        path = Path(path)
        meta = SearchIndexMeta(
            backend=self.backend,
            index_kappa=self.index_kappa,
            num_cells=self.num_cells,
            dim=self.dim,
            params=asdict(self.params) if self.params else None,
            refine_trained=(
                [float(value) for value in self.refiner.trained] if self.refiner else None
            ),
        )
        if self.refiner is not None:
            self.refiner.save(refine_path(path))
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
        warm: str = "auto",
    ) -> CellSearcher:
        """Open a saved searcher over the same database rows it was built from; its sidecar
        (``SearchIndexMeta``) is read here and nowhere else (an ``ArtifactError`` names it).

        ``warm``: how the sq8 refine file enters the page cache (``SQ8Refiner.warm``):
        "auto" (read it whole at load when it fits in half the available memory, else
        prefetch each search's rows), "load", "query" or "off". Results do not depend on it.
        """
        import faiss

        check_warm_mode(warm)
        path = Path(path)
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
        refiner = None
        if params.refine == "sq8":
            if meta.refine_trained is None:
                raise ValueError(
                    f"{SearchIndexMeta.path_of(path)} lacks the refine quantiser "
                    "(refine_trained); rebuild it: geocells calibrate DB"
                )
            refiner = SQ8Refiner.load(
                refine_path(path), meta.refine_trained, *aerial.shape, warm=warm
            )
        return cls(aerial, proto, kappa, "ivfpq", index, params, meta.index_kappa, refiner)


def _check_kappa(kappa: float) -> float:
    """kappa as a finite float; ValueError otherwise."""
    kappa = float(kappa)
    if not math.isfinite(kappa):
        raise ValueError(f"kappa must be finite, got {kappa}")
    return kappa
