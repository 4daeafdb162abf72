"""CellSearcher: exact and IVF-PQ search over float16 aerial/proto codes."""

from pathlib import Path

import numpy as np
import pytest

from geocells.scoring.exact import exact_search, rerank_exact
from geocells.search.ivfpq import CellSearcher


@pytest.fixture(autouse=True, scope="module")
def single_faiss_thread():
    """One OpenMP thread: spinning OpenMP threads crawl when pytest -n 2 shares two cores."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


def structured_codes(num_cells: int, dim: int = 64, seed: int = 0):
    """Smooth field along a 1-D "space" plus per-cell noise; proto shared by 4 siblings."""
    rng = np.random.default_rng(seed)
    position = np.sort(rng.random(num_cells)) * 20.0
    freqs = rng.normal(size=16) * np.geomspace(1.0, 100.0, 16)

    def field(mix):
        values = np.cos(position[:, None] * freqs + rng.random(16) * 6.28) @ mix
        return values / np.linalg.norm(values, axis=1, keepdims=True)

    aerial = field(rng.normal(size=(16, dim))) + 0.1 * rng.normal(size=(num_cells, dim))
    parent_noise = rng.normal(size=(num_cells // 4 + 1, dim))[np.arange(num_cells) // 4]
    proto = field(rng.normal(size=(16, dim))) + 0.1 * parent_noise
    aerial /= np.linalg.norm(aerial, axis=1, keepdims=True)
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    return aerial.astype(np.float16), proto.astype(np.float16), rng


def perturbed_queries(aerial, proto, rng, count: int, noise: float = 0.05):
    """Queries near the codes of random cells (float32, unit norm)."""
    targets = rng.choice(len(aerial), count, replace=False)
    queries = aerial[targets].astype(np.float32) + proto[targets].astype(np.float32)
    queries += noise * rng.normal(size=queries.shape).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True), targets


def brute_force(aerial, proto, kappa, queries, k):
    scores = aerial.astype(np.float64) @ queries.T + kappa * (proto.astype(np.float64) @ queries.T)
    rows = np.argsort(-scores.T, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores.T, rows, 1), rows


def test_exact_equals_brute_force():
    aerial, proto, rng = structured_codes(3_000)
    queries, _ = perturbed_queries(aerial, proto, rng, 40)
    scores, rows = exact_search(
        queries, aerial=aerial, proto=proto, kappa=0.7, top_k=7, chunk_rows=1_000
    )
    ref_scores, ref_rows = brute_force(aerial, proto, 0.7, queries, 7)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert scores.dtype == np.float32 and rows.dtype == np.int64


def test_exact_searcher_small_database_and_memmap(tmp_path):
    aerial, proto, rng = structured_codes(500)
    path_a, path_p = tmp_path / "aerial.npy", tmp_path / "proto.npy"
    np.save(path_a, aerial)
    np.save(path_p, proto)
    mem_a, mem_p = np.load(path_a, mmap_mode="r"), np.load(path_p, mmap_mode="r")
    searcher = CellSearcher.build(mem_a, mem_p, kappa=2.0)  # auto -> exact at this size
    assert searcher.backend == "exact"
    queries, _ = perturbed_queries(aerial, proto, rng, 10)
    scores, rows = searcher.search(queries, top_k=600)  # more than the database holds
    assert rows.shape == (10, 500)
    _, ref_rows = brute_force(aerial, proto, 2.0, queries, 500)
    np.testing.assert_array_equal(rows[:, :5], ref_rows[:, :5])
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.fixture(scope="module")
def ivfpq_case():
    aerial, proto, rng = structured_codes(20_000)
    searcher = CellSearcher.build(
        aerial, proto, kappa=0.8, backend="ivfpq", layout="concat", nlist=128
    )
    queries, targets = perturbed_queries(aerial, proto, rng, 500)
    return aerial, proto, searcher, queries, targets


def test_ivfpq_top1_agrees_with_exact(ivfpq_case):
    aerial, proto, searcher, queries, _ = ivfpq_case
    _, exact_rows = exact_search(queries, aerial=aerial, proto=proto, kappa=0.8, top_k=5)
    scores, rows = searcher.search(queries, top_k=5)
    agreement = np.mean(rows[:, 0] == exact_rows[:, 0])
    assert agreement >= 0.99, agreement
    # Re-ranked scores are the exact scores of the returned rows.
    ref = aerial[rows[:, 0]].astype(np.float32) @ queries.T
    ref += 0.8 * (proto[rows[:, 0]].astype(np.float32) @ queries.T)
    np.testing.assert_allclose(scores[:, 0], np.diag(ref), rtol=1e-4, atol=1e-4)
    # The compressed index stays well under the float16 database size.
    assert searcher.memory_bytes() < 0.5 * (aerial.nbytes + proto.nbytes)


def test_ivfpq_kappa_changes_without_rebuild(ivfpq_case):
    aerial, proto, searcher, queries, _ = ivfpq_case
    searcher.kappa = 3.0
    try:
        _, rows = searcher.search(queries[:200], top_k=1)
    finally:
        searcher.kappa = 0.8
    _, exact_rows = exact_search(queries[:200], aerial=aerial, proto=proto, kappa=3.0, top_k=1)
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.98


def test_save_load_round_trip(ivfpq_case, tmp_path):
    aerial, proto, searcher, queries, _ = ivfpq_case
    path = searcher.save(tmp_path / "index.faiss")
    assert path.is_file() and (tmp_path / "index.faiss.json").is_file()
    loaded = CellSearcher.load(path, aerial, proto, kappa=0.8)
    assert loaded.backend == "ivfpq" and loaded.params == searcher.params
    for got, want in zip(loaded.search(queries[:50], 3), searcher.search(queries[:50], 3)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="built for"):
        CellSearcher.load(path, aerial[:100], proto[:100], kappa=0.8)


def test_exact_save_load(tmp_path):
    aerial, proto, _ = structured_codes(200)
    CellSearcher.build(aerial, proto, 1.0, backend="exact").save(tmp_path / "idx")
    assert CellSearcher.load(tmp_path / "idx", aerial, proto, 1.0).backend == "exact"
    with pytest.raises(FileNotFoundError):
        CellSearcher.load(tmp_path / "missing", aerial, proto, 1.0)


def test_rerank_handles_missing_candidates():
    aerial, proto, rng = structured_codes(50)
    queries, _ = perturbed_queries(aerial, proto, rng, 2)
    candidates = np.array([[3, -1, 7], [-1, -1, 9]])
    scores, rows = rerank_exact(aerial, proto, 1.0, queries, candidates, top_k=3)
    assert set(rows[0]) == {3, 7, -1} and rows[0, 2] == -1 and scores[0, 2] == -np.inf
    assert rows[1, 0] == 9 and list(rows[1, 1:]) == [-1, -1]


def test_bad_inputs_raise():
    aerial, proto, _ = structured_codes(300)
    with pytest.raises(ValueError, match="shapes differ"):
        CellSearcher.build(aerial, proto[:, :32], 1.0)
    with pytest.raises(ValueError, match="unknown search backend"):
        CellSearcher.build(aerial, proto, 1.0, backend="annoy")
    with pytest.raises(ValueError, match="unknown search parameters"):
        CellSearcher.build(aerial, proto, 1.0, nprob=3)
    bad = aerial.copy()
    bad[17, 3] = np.nan
    with pytest.raises(ValueError, match=r"aerial codes contain NaN.*17"):
        CellSearcher.build(bad, proto, 1.0, backend="exact")
    searcher = CellSearcher.build(aerial, proto, 1.0, backend="exact")
    with pytest.raises(ValueError, match=r"queries must be \[Q, 64\]"):
        searcher.search(np.zeros((2, 63), np.float32), 1)
    nan_query = np.ones((3, 64), np.float32)
    nan_query[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[1\]"):
        searcher.search(nan_query, 1)
    with pytest.raises(ValueError, match="top_k"):
        searcher.search(np.ones((1, 64), np.float32), 0)
    with pytest.raises(ValueError, match="kappa"):
        CellSearcher.build(aerial, proto, float("nan"), backend="exact")


def test_sum_layout_is_tied_to_its_kappa(tmp_path):
    aerial, proto, rng = structured_codes(10_000, seed=1)
    searcher = CellSearcher.build(aerial, proto, 0.5, backend="ivfpq", nlist=64)
    assert searcher.params.layout == "sum"  # the default
    queries, _ = perturbed_queries(aerial, proto, rng, 300)
    _, exact_rows = exact_search(queries, aerial=aerial, proto=proto, kappa=0.5, top_k=1)
    _, rows = searcher.search(queries, top_k=1)
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.99
    path = searcher.save(tmp_path / "sum.faiss")
    with pytest.raises(ValueError, match=r"built for kappa=0\.5"):
        CellSearcher.load(path, aerial, proto, kappa=2.0)
    loaded = CellSearcher.load(path, aerial, proto, kappa=0.5)
    loaded.kappa = 2.0
    with pytest.raises(ValueError, match=r"built for kappa=0\.5"):
        loaded.search(queries[:2], top_k=1)
    with pytest.raises(ValueError, match="unknown index layout"):
        CellSearcher.build(aerial, proto, 0.5, backend="ivfpq", layout="stacked")


def test_rerank_with_no_candidates_at_all():
    aerial, proto, rng = structured_codes(50)
    queries, _ = perturbed_queries(aerial, proto, rng, 2)
    scores, rows = rerank_exact(aerial, proto, 1.0, queries, np.full((2, 4), -1), top_k=3)
    assert rows.shape == (2, 3) and (rows == -1).all() and np.isneginf(scores).all()


def test_exact_search_leaves_float32_inputs_untouched():
    rng = np.random.default_rng(7)
    aerial = rng.standard_normal((300, 16)).astype(np.float32)
    proto = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    aerial_before, proto_before = aerial.copy(), proto.copy()
    first = exact_search(queries, aerial=aerial, proto=proto, kappa=2.0, top_k=5)
    second = exact_search(queries, aerial=aerial, proto=proto, kappa=2.0, top_k=5)
    np.testing.assert_array_equal(aerial, aerial_before)
    np.testing.assert_array_equal(proto, proto_before)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_exact_searcher_cache_follows_kappa_changes():
    rng = np.random.default_rng(3)
    aerial = rng.standard_normal((500, 16)).astype(np.float16)
    proto = rng.standard_normal((500, 16)).astype(np.float16)
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    searcher = CellSearcher.build(aerial, proto, kappa=0.5, backend="exact")
    for kappa in (0.5, 3.0, 0.5):
        searcher.kappa = kappa
        scores, rows = searcher.search(queries, top_k=4)
        expected_scores, expected_rows = exact_search(
            queries, aerial=aerial, proto=proto, kappa=kappa, top_k=4
        )
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)


def test_proportional_shares_split_exactly():
    from geocells.search.coarse import _proportional_shares

    sizes = np.array([0, 1, 5, 100, 1000, 3])
    for total in (5, 17, 300, 1109):
        shares = _proportional_shares(sizes, total)
        assert shares.sum() == total
        assert np.all(shares <= sizes)
        assert np.all(shares[sizes > 0] >= 1) and shares[0] == 0
    assert list(_proportional_shares(np.array([10, 30]), 4)) == [1, 3]
    with pytest.raises(ValueError, match="cannot split"):
        _proportional_shares(sizes, 2000)


def test_two_level_centroids_cover_the_sample():
    from geocells.search.coarse import two_level_centroids

    aerial, proto, _ = structured_codes(6_000, dim=32)
    sample = aerial.astype(np.float32) + proto.astype(np.float32)
    centroids = two_level_centroids(sample, 100, seed=0)
    assert centroids.shape == (100, 32)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    # Sample vectors lie far closer to their best centroid than to the best of 100 random
    # unit vectors, and about as close as with flat k-means.
    import faiss

    unit = sample / np.linalg.norm(sample, axis=1, keepdims=True)
    fit = np.median((unit @ centroids.T).max(axis=1))
    random = np.random.default_rng(1).normal(size=(100, 32))
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    assert fit > np.median((unit @ random.T).max(axis=1)) + 0.25
    flat = faiss.Kmeans(32, 100, niter=10, spherical=True, seed=0)
    flat.train(sample)
    assert fit > np.median((unit @ flat.centroids.T).max(axis=1)) - 0.05
    with pytest.raises(ValueError, match="too few"):
        two_level_centroids(sample[:50], 100)


def test_hnsw_coarse_quantiser_search_and_reload(tmp_path):
    aerial, proto, rng = structured_codes(12_000)
    searcher = CellSearcher.build(aerial, proto, 1.0, backend="ivfpq", nlist=256, coarse="hnsw")
    assert searcher.params.coarse == "hnsw" and searcher.params.nprobe == 64  # 2 √256 < 64
    assert searcher._coarse is not None and searcher._coarse.ntotal == 256  # lists finder
    queries, _ = perturbed_queries(aerial, proto, rng, 300)
    _, exact_rows = exact_search(queries, aerial=aerial, proto=proto, kappa=1.0, top_k=1)
    _, rows = searcher.search(queries, top_k=3)
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.99
    loaded = CellSearcher.load(searcher.save(tmp_path / "index.faiss"), aerial, proto, 1.0)
    assert loaded.params == searcher.params and loaded._coarse is not None
    np.testing.assert_array_equal(loaded.search(queries[:30], 3)[1], rows[:30])


def test_auto_parameters_follow_the_database_size():
    from geocells.search.ivfpq import IVFPQParams

    small = IVFPQParams().resolved(1_000_000, 256)
    assert (small.nlist, small.coarse, small.nprobe) == (2048, "flat", 64)
    # sum layout: 32 B PQ codes, a shortlist of 512 re-scored from the sq8 refine file
    assert (small.pq_m, small.refine, small.rerank, small.finder) == (64, "sq8", 512, "fp16")
    assert small.residual  # PQ of the residual to the list centroid
    concat = IVFPQParams(layout="concat").resolved(1_000_000, 256)
    assert (concat.pq_m, concat.refine, concat.rerank) == (128, "none", 64)
    large = IVFPQParams().resolved(24_642_645, 256)
    assert (large.nlist, large.coarse, large.nprobe) == (65_536, "hnsw", 1448)
    # HNSW indexes visit ~2.2 % of their lists: 181 at 4 M cells, 362 at 8 M (0.995 there).
    nprobes = [IVFPQParams().resolved(cells, 256).nprobe for cells in (4_000_000, 8_000_000)]
    assert nprobes == [181, 362]
    with pytest.raises(ValueError, match="coarse quantiser"):
        IVFPQParams(coarse="ivf").resolved(1000, 8)
    with pytest.raises(ValueError, match="list finder 'hnsw'"):
        IVFPQParams(finder="hnsw").resolved(1000, 8)
    with pytest.raises(ValueError, match="needs layout 'sum'"):
        IVFPQParams(layout="concat", refine="sq8").resolved(1000, 8)


def test_ivfpq_searcher_advises_random_access_on_memmaps(tmp_path):
    from geocells.scoring.memmap import advise_random_access

    aerial, _, _ = structured_codes(200)
    np.save(tmp_path / "a.npy", aerial)
    assert advise_random_access(np.load(tmp_path / "a.npy", mmap_mode="r"))
    assert not advise_random_access(aerial)  # in RAM: nothing to advise


def test_prefetch_rows_and_rerank_from_memmaps(tmp_path, ivfpq_case):
    from geocells.scoring.memmap import prefetch_rows

    aerial, proto, searcher, queries, _ = ivfpq_case
    np.save(tmp_path / "a.npy", aerial)
    np.save(tmp_path / "p.npy", proto)
    mem_a, mem_p = (
        np.load(tmp_path / "a.npy", mmap_mode="r"),
        np.load(tmp_path / "p.npy", mmap_mode="r"),
    )
    last = len(aerial) - 1
    # Rows 0 and 7 lie in the first pages: one run; the last row (ending the file) another.
    assert prefetch_rows(mem_a, np.array([0, 7, last])) == 2
    assert prefetch_rows(aerial, np.array([0])) == 0  # in RAM: nothing to prefetch
    on_disk = CellSearcher(mem_a, mem_p, 0.8, "ivfpq", searcher.index, searcher.params)
    for got, want in zip(on_disk.search(queries[:40], 3), searcher.search(queries[:40], 3)):
        np.testing.assert_array_equal(got, want)


def test_exact_search_breaks_ties_by_the_lower_row_everywhere():
    """Identical codes (uncovered cells sharing a parent prototype score alike): every exact
    top-k — the function, the searcher and eval's streamed one — keeps the lowest rows."""
    from geocells.eval.methods import MethodDatabase, codes_scorer, evaluate_method

    rng = np.random.default_rng(3)
    aerial = np.zeros((5_000, 16), np.float16)
    proto = np.tile(rng.normal(size=(1, 16)), (5_000, 1)).astype(np.float16)
    proto[::7] = rng.normal(size=(len(proto[::7]), 16))  # a few distinct rows
    queries = rng.normal(size=(6, 16)).astype(np.float32)
    kw = {"aerial": aerial, "proto": proto, "kappa": 1.0, "top_k": 12}
    _, rows = exact_search(queries, **kw, chunk_rows=1_024)
    dense = queries @ proto.astype(np.float32).T
    order = np.lexsort((np.broadcast_to(np.arange(5_000), dense.shape), -dense), axis=1)
    np.testing.assert_array_equal(rows, order[:, :12])
    searcher = CellSearcher.build(aerial, proto, 1.0, "exact")
    np.testing.assert_array_equal(searcher.search(queries, 12)[1], rows)
    lat, lon = np.linspace(40, 41, 5_000), np.zeros(5_000)
    method = MethodDatabase("m", "m", lat, lon, codes_scorer((proto, 1.0)), 0)
    result = evaluate_method(method, queries, lat[:6], lon[:6], top_k=12)
    np.testing.assert_array_equal(result.top_index, rows)


def test_sq8_refine_file_is_written_beside_the_index_and_required(tmp_path):
    from geocells.search.refine import refine_path

    aerial, proto, rng = structured_codes(12_000)
    searcher = CellSearcher.build(aerial, proto, 1.0, backend="ivfpq", nlist=256, coarse="hnsw")
    assert (searcher.params.refine, searcher.params.pq_m) == ("sq8", 16)  # D/4 at D=64
    assert (searcher.params.rerank, searcher.params.exact_rerank) == (512, 16)
    queries, _ = perturbed_queries(aerial, proto, rng, 300)
    _, exact_rows = exact_search(queries, aerial=aerial, proto=proto, kappa=1.0, top_k=1)
    scores, rows = searcher.search(queries, top_k=3)
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.99
    # The top rows carry exact scores (the 8-bit stage only chooses which rows).
    fused = aerial[rows[:, 0]].astype(np.float32) + proto[rows[:, 0]].astype(np.float32)
    np.testing.assert_allclose(scores[:, 0], np.einsum("qd,qd->q", fused, queries), atol=1e-4)
    path = searcher.save(tmp_path / "index.faiss")
    codes = np.load(refine_path(path), mmap_mode="r")
    assert codes.shape == (12_000, 64) and codes.dtype == np.uint8
    loaded = CellSearcher.load(path, aerial, proto, 1.0)
    assert isinstance(loaded.refiner.codes, np.memmap)
    np.testing.assert_array_equal(loaded.search(queries[:50], 3)[1], rows[:50])
    # The refine codes are a memmap, not process memory; the PQ codes are 16 B per cell.
    assert loaded.memory_bytes() < 12_000 * 40
    refine_path(path).unlink()
    with pytest.raises(FileNotFoundError, match=r"sq8\.npy"):
        CellSearcher.load(path, aerial, proto, 1.0)
    np.save(refine_path(path), np.zeros((10, 64), np.uint8))
    with pytest.raises(ValueError, match="expected uint8 \\(12000, 64\\)"):
        CellSearcher.load(path, aerial, proto, 1.0)


def test_index_saved_before_issue_23_still_loads_as_built(tmp_path):
    """A format-2 sidecar (no finder / refine / exact_rerank) loads with the old search."""
    import dataclasses
    import json

    aerial, proto, rng = structured_codes(12_000)
    old = CellSearcher.build(
        aerial, proto, 1.0, backend="ivfpq", nlist=256, coarse="hnsw", pq_m=32,
        finder="flat", refine="none", rerank=64, residual=False,
    )  # fmt: skip
    path = old.save(tmp_path / "index.faiss")
    sidecar = tmp_path / "index.faiss.json"
    meta = json.loads(sidecar.read_text())
    for key in ("finder", "refine", "exact_rerank", "residual"):
        del meta["params"][key]
    sidecar.write_text(json.dumps({**meta, "format_version": 2}))
    loaded = CellSearcher.load(path, aerial, proto, 1.0)
    assert (loaded.params.finder, loaded.params.refine, loaded.refiner) == ("flat", "none", None)
    assert loaded.params == dataclasses.replace(old.params, exact_rerank=0)  # unused by "none"
    queries, _ = perturbed_queries(aerial, proto, rng, 50)
    np.testing.assert_array_equal(loaded.search(queries, 3)[1], old.search(queries, 3)[1])
    sidecar.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match="has format_version 1, this geocells reads version 3"):
        CellSearcher.load(path, aerial, proto, 1.0)


def test_sq8_scores_equal_products_with_faiss_decoded_rows():
    import faiss

    from geocells.search.refine import SQ8Refiner

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(300, 32)).astype(np.float32)
    refiner = SQ8Refiner.build(lambda a, b: rows[a:b], 300, 32, rows, chunk=128)
    quantizer = faiss.ScalarQuantizer(32, faiss.ScalarQuantizer.QT_8bit)
    faiss.copy_array_to_vector(refiner.trained, quantizer.trained)
    decoded = quantizer.decode(np.ascontiguousarray(refiner.codes))
    assert np.abs(decoded - rows).max() < 0.05  # 8 bits per dimension
    queries = rng.normal(size=(2, 32)).astype(np.float32)
    picked = refiner.codes[[[5, 7, 9], [1, 2, 299]]]
    want = np.einsum("qmd,qd->qm", decoded[[[5, 7, 9], [1, 2, 299]]], queries)
    np.testing.assert_allclose(refiner.scores(queries, picked), want, rtol=1e-5, atol=1e-5)
    kept = refiner.rescore(queries, np.array([[5, -1, 9, 7], [-1, -1, -1, -1]]), keep=2)
    assert set(kept[0]) <= {5, 7, 9} and (kept[1] == -1).all()
    best = np.argsort(-(rows[[5, 9, 7]] @ queries[0]))[:2]
    assert set(kept[0]) == set(np.array([5, 9, 7])[best])


def test_large_refine_codes_built_without_a_file_live_in_an_unlinked_temp_file(
    tmp_path, monkeypatch
):
    import geocells.search.refine as refine

    monkeypatch.setattr(refine, "RAM_MAX_BYTES", 0)
    aerial, proto, rng = structured_codes(12_000)
    searcher = CellSearcher.build(aerial, proto, 1.0, backend="ivfpq", nlist=256, coarse="hnsw")
    codes = searcher.refiner.codes
    assert isinstance(codes, np.memmap) and not Path(codes.filename).exists()
    assert searcher.memory_bytes() < 12_000 * 40  # not counted as process memory
    queries, _ = perturbed_queries(aerial, proto, rng, 100)
    _, rows = searcher.search(queries, top_k=3)
    path = searcher.save(tmp_path / "index.faiss")  # copied beside the index
    loaded = CellSearcher.load(path, aerial, proto, 1.0)
    np.testing.assert_array_equal(loaded.search(queries, 3)[1], rows)


def test_index_built_into_its_refine_file_saves_through_a_symlinked_folder(tmp_path):
    from geocells.search.refine import refine_path

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    aerial, proto, rng = structured_codes(12_000)
    target = tmp_path / "link" / "index.faiss"
    searcher = CellSearcher.build(
        aerial, proto, 1.0, backend="ivfpq", nlist=256, coarse="hnsw",
        refine_file=refine_path(target),  # through the link, as save will be
    )  # fmt: skip
    queries, _ = perturbed_queries(aerial, proto, rng, 50)
    _, rows = searcher.search(queries, 3)
    searcher.save(target)
    assert np.load(refine_path(target), mmap_mode="r").shape == (12_000, 64)
    np.testing.assert_array_equal(
        CellSearcher.load(target, aerial, proto, 1.0).search(queries, 3)[1], rows
    )
