"""Coarse quantisers of the IVF index: two-level k-means centroids and the list finder."""

from __future__ import annotations

import math

import numpy as np

KMEANS_ITERATIONS = 10


def pow2_near(value: float, low: int, high: int) -> int:
    """The power of two nearest to ``value`` (in log space), clipped to [low, high]."""
    return int(min(max(2 ** round(math.log2(max(value, 1.0))), low), high))


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
    groups = pow2_near(math.sqrt(nlist), low=1, high=nlist)
    options = {"niter": KMEANS_ITERATIONS, "spherical": True, "min_points_per_centroid": 1}
    top = faiss.Kmeans(dim, groups, seed=seed, **options)
    top.train(sample)
    _, assignment = top.index.search(sample, 1)
    assignment = assignment[:, 0]
    shares = _proportional_shares(np.bincount(assignment, minlength=groups), nlist)
    parts = []
    for group in tqdm(
        range(groups), desc="coarse k-means", unit="group", disable=None if progress else True
    ):
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


FINDERS = ("flat", "fp16")


def coarse_index(index, finder: str = "fp16"):
    """Query-time list finder of an index with an HNSW quantiser, else None.

    The HNSW graph assigns rows to lists well (``HNSW_EF_ADD``) but, asked for the
    hundreds of lists a noisy query must visit, it returns only ~90 % of the true top
    ones (0.983 top-1 agreement at nprobe 512 of 65,536 lists). An IVF over the
    centroids themselves (√nlist groups) finds them more completely: ``flat`` (float32
    centroids, a quarter of the groups scanned: the finder of indexes built before
    issue 23) or ``fp16`` (centroids stored in float16, half the bytes to read, and half
    of the groups scanned; docs/scaling.md, "Coarse lists" and "Single machine at 2 ms").
    """
    import faiss

    if finder not in FINDERS:
        raise ValueError(f"unknown list finder {finder!r}; expected one of {FINDERS}")
    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexHNSW):
        return None
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    groups = pow2_near(math.sqrt(len(centroids)), low=1, high=len(centroids))
    dim = centroids.shape[1]
    top = faiss.IndexFlatIP(dim)
    if finder == "flat":
        found = faiss.IndexIVFFlat(top, dim, groups, faiss.METRIC_INNER_PRODUCT)
    else:
        fp16 = faiss.ScalarQuantizer.QT_fp16
        found = faiss.IndexIVFScalarQuantizer(
            top, dim, groups, fp16, faiss.METRIC_INNER_PRODUCT, False
        )
    found.own_fields = True
    top.this.disown()  # the finder now owns and frees it
    found.cp.spherical = True
    found.cp.seed = 0
    found.cp.min_points_per_centroid = 1  # small test indexes: no faiss warning on stderr
    found.train(centroids)
    found.add(centroids)  # ids = list numbers
    return found


def default_group_probe(finder: str, groups: int) -> int:
    """Groups of centroids the finder scans: a quarter (``flat``) or half (``fp16``)."""
    return max(1, groups // 4 if finder == "flat" else groups // 2)
