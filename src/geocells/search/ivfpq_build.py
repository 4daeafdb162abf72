"""Building the compressed index: its parameters and the faiss IVF-PQ over the fused codes.

``IVFPQParams`` resolves the size-dependent defaults (docs/scaling.md has the runs behind
them); ``build_ivfpq_index`` trains the coarse lists, the 4-bit fast-scan product
quantiser and, by default, the SQ8 refine codes (``search.refine``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from geocells.scoring.exact import check_finite_rows
from geocells.search.coarse import FINDERS, pow2_near, two_level_centroids
from geocells.search.refine import REFINES, SQ8Refiner

logger = logging.getLogger(__name__)

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
# Share of the lists an HNSW-quantised index visits per query (_default_nprobe).
PROBE_SHARE = 181 / 8192
# Bumped when the same parameters build a different index (benchmarks key their cache on it).
BUILD_VERSION = 3


@dataclass
class IVFPQParams:
    """Parameters of the compressed backend; 0 / "auto" means "pick from the database size"."""

    layout: str = "sum"  # "sum": index aerial + kappa proto; "concat": index [aerial | proto]
    nlist: int = 0  # inverted lists (coarse cells); 0 -> about N / 512, a power of two
    pq_m: int = 0  # 4-bit sub-quantisers; 0 -> D/4 with the sq8 refine (32 B per cell at
    # D=256), D/2 without (64 B)
    # Coarse quantiser: "flat" (exact, k-means), "hnsw" (graph over two-level k-means
    # centroids, for many lists), "auto" = hnsw above FLAT_MAX_LISTS lists.
    coarse: str = "auto"
    nprobe: int = 0  # lists visited per query; 0 -> from nlist (docs/scaling.md)
    # HNSW indexes: how the nprobe lists are found ("fp16" or the older "flat" finder,
    # coarse.coarse_index) and how many groups of lists it scans; 0 -> half (fp16) or a
    # quarter (flat) of them.
    finder: str = "fp16"
    group_probe: int = 0
    # "sq8": 8-bit codes of the fused rows in a file beside the index re-score the PQ
    # shortlist; "none": the shortlist is re-scored exactly from the float16 rows (the
    # only choice for layout "concat"); "auto": sq8 for "sum".
    refine: str = "auto"
    rerank: int = 0  # PQ shortlist re-scored (sq8 or exact); 0 -> 512 with sq8, 64 without
    exact_rerank: int = 16  # sq8 only: best rows of the refine step re-scored exactly
    # PQ codes of the residual to the list centroid (faiss by_residual). faiss leaves it
    # off for inner product; indexes built before issue 23 encoded the vectors themselves.
    residual: bool = True
    train_size: int = 0  # vectors sampled for training; 0 -> 32-64 per list, at most 2.2 M
    add_chunk: int = 262_144  # rows converted and added per step
    seed: int = 0

    def resolved(self, num_cells: int, dim: int) -> IVFPQParams:
        """Copy with the size-dependent defaults filled in (``dim`` = code dimension D)."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown index layout {self.layout!r}; expected one of {LAYOUTS}")
        if self.coarse not in COARSE:
            raise ValueError(f"unknown coarse quantiser {self.coarse!r}; expected one of {COARSE}")
        if self.finder not in FINDERS:
            raise ValueError(f"unknown list finder {self.finder!r}; expected one of {FINDERS}")
        refine = self.refine
        if refine == "auto":
            refine = "sq8" if self.layout == "sum" else "none"
        if refine not in REFINES:
            raise ValueError(f"unknown refine {self.refine!r}; expected auto or one of {REFINES}")
        if refine == "sq8" and self.layout != "sum":
            raise ValueError("the sq8 refine stores fused codes: it needs layout 'sum'")
        # Short lists: with noisy queries, the coarse step finds the right list far more
        # often per code scanned when lists are small (docs/scaling.md, "Coarse lists").
        nlist = self.nlist or pow2_near(num_cells / LIST_SIZE, low=16, high=65_536)
        nlist = min(nlist, max(1, num_cells // 39))
        coarse = self.coarse
        if coarse == "auto":
            coarse = "hnsw" if nlist > FLAT_MAX_LISTS else "flat"
        nprobe = self.nprobe or _default_nprobe(nlist, coarse)
        pq_m = self.pq_m or (dim // 4 if refine == "sq8" else dim // 2)
        per_list = 64 if coarse == "flat" else 32
        train_size = self.train_size or min(num_cells, max(per_list * nlist, 20_000), 2_200_000)
        rerank = self.rerank or (512 if refine == "sq8" else 64)
        return replace(
            self, nlist=nlist, pq_m=pq_m, coarse=coarse, nprobe=nprobe, train_size=train_size,
            refine=refine, rerank=rerank,
        )  # fmt: skip


def _default_nprobe(nlist: int, coarse: str) -> int:
    """Lists to visit, from the runs in docs/scaling.md: 64 with a flat quantiser (<= 4,096
    lists); with HNSW a fixed share of the lists, ``PROBE_SHARE`` (181 at 8,192 lists,
    362 at 16,384, 1,448 at 65,536).

    The list that holds a query's exact top-1 ranks further down as lists are added: at
    ~490 cells per list its 99.5th percentile rank was 134 of 8,192 lists (4 M cells) and
    226 of 16,384 (8 M), and top-1 agreement >= 0.995 took nprobe 181 and 362. The
    previous 2·sqrt(nlist) (``sqrt_nprobe``) gave 0.996 at 4 M but 0.993 at 8 M."""
    if coarse == "flat":
        return min(nlist, 64)
    return min(nlist, max(64, round(nlist * PROBE_SHARE)))


def sqrt_nprobe(nlist: int) -> int:
    """The HNSW indexes' nprobe before the 8 M-cell runs of issue 23: 2·sqrt(nlist)."""
    return min(nlist, max(64, round(2 * math.sqrt(nlist))))


def _index_vectors(aerial_block, proto_block, layout: str, kappa: float) -> np.ndarray:
    """Database vectors the index holds: [aerial | proto] (2D) or aerial + kappa proto (D)."""
    if layout == "concat":
        joined = np.concatenate([aerial_block, proto_block], axis=1)
        return np.ascontiguousarray(joined, dtype=np.float32)
    summed = np.asarray(aerial_block, dtype=np.float32)
    summed += np.float32(kappa) * np.asarray(proto_block, dtype=np.float32)
    return summed


def build_ivfpq_index(
    aerial: np.ndarray,
    proto: np.ndarray,
    params: IVFPQParams,
    kappa: float,
    progress=True,
    refine_file: Path | None = None,
):
    """Train faiss IVF-PQ (4-bit fast scan) on a sample and add every row in chunks;
    -> (index, SQ8Refiner or None). The refine codes go to ``refine_file`` if given."""
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
    refiner = None
    if params.refine == "sq8":

        def fused_rows(start: int, stop: int) -> np.ndarray:
            block_a, block_p = np.asarray(aerial[start:stop]), np.asarray(proto[start:stop])
            check_finite_rows(block_a, start, "aerial")
            check_finite_rows(block_p, start, "proto")
            return _index_vectors(block_a, block_p, "sum", kappa)

        logger.info("SQ8 refine codes for %d rows", num_cells)
        refine_train = train[rng.choice(len(train), min(len(train), PQ_TRAIN_MAX), replace=False)]
        refiner = SQ8Refiner.build(fused_rows, num_cells, dim, refine_train, refine_file)
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
    index.by_residual = params.residual
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
    return index, refiner
