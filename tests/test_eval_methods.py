"""Method databases, their evaluation, and the colour-histogram baseline on hand-made data."""

import numpy as np
import pytest

from geocells.eval.histogram import colour_histograms, histogram_scorer
from geocells.eval.methods import MethodDatabase, cell_code_methods, evaluate_method
from geocells.geo import cell_to_latlng, haversine_m, latlng_to_cell
from geocells.io import DatabaseMeta


def _line_database():
    # Three items 0, 1 km and 2 km north of the equator origin; one-hot embeddings.
    lat = np.array([0.0, 1000 / 111_195, 2000 / 111_195])
    lon = np.zeros(3)
    vectors = np.eye(3, dtype=np.float32)
    return MethodDatabase(
        "toy", "toy", lat, lon, lambda q, rows: q @ vectors[rows].T, storage_bytes=3
    )


def test_evaluate_method_top_k_errors_and_ranks():
    method = _line_database()
    queries = np.array([[0.1, 0.9, 0.0], [1.0, 0.0, 0.5]], dtype=np.float32)
    query_lat = np.array([1000 / 111_195, 2000 / 111_195])
    result = evaluate_method(method, queries, query_lat, np.zeros(2), top_k=2)
    np.testing.assert_array_equal(result.top_index, [[1, 0], [0, 2]])
    two_km = float(haversine_m(query_lat[1], 0.0, 0.0, 0.0))  # item 0 lies at the origin
    assert 1980 < two_km < 2020
    np.testing.assert_allclose(result.errors_m, [0.0, two_km], atol=1e-6)
    np.testing.assert_allclose(result.topk_errors_m[1], [two_km, 0.0], atol=1e-6)
    # Query 0 finds its own item first; query 1's only item within 200 m is ranked 2nd.
    np.testing.assert_array_equal(result.ranks, [1, 2])


def test_evaluate_method_rejects_wrong_score_shape():
    method = _line_database()
    method.score = lambda q, rows: np.zeros((len(q), 2))
    with pytest.raises(ValueError, match="scores of shape"):
        evaluate_method(method, np.zeros((1, 3)), np.zeros(1), np.zeros(1))


def test_cell_code_methods_fuse_with_kappa():
    cells = latlng_to_cell(np.array([48.0, 48.01]), np.array([11.0, 11.0]), 16)
    aerial = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float16)
    proto = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float16)
    lp_cells = np.unique(latlng_to_cell(np.array([48.0, 48.01]), np.array([11.0, 11.0]), 15))
    lp = np.eye(2, dtype=np.float32)[: len(lp_cells)]
    methods = {m.name: m for m in cell_code_methods(cells, aerial, proto, 3.0, lp_cells, lp)}
    assert list(methods) == ["proto_lp", "proto_lc", "aerial", "hybrid_k1", "hybrid"]
    query = np.array([[0.9, 0.1]], dtype=np.float32)
    every = slice(None)
    np.testing.assert_allclose(methods["aerial"].score(query, every), [[0.9, 0.1]], rtol=1e-3)
    np.testing.assert_allclose(methods["hybrid_k1"].score(query, every), [[1.0, 1.0]], rtol=1e-3)
    hybrid = methods["hybrid"].score(query, every)
    np.testing.assert_allclose(hybrid, [[0.9 + 0.3, 0.1 + 2.7]], rtol=1e-3)
    np.testing.assert_allclose(methods["hybrid"].score(query, np.array([1])), [[2.8]], rtol=1e-3)
    lat, _ = cell_to_latlng(cells)
    np.testing.assert_allclose(methods["hybrid"].lat, lat)
    assert methods["aerial"].storage_bytes == 2 * (2 * 2 + 8)


def test_colour_histograms_match_identical_colours_best():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 250
    green = np.zeros((8, 8, 3), np.uint8)
    green[..., 1] = 250
    half = red.copy()
    half[:4] = green[:4]
    database = colour_histograms([red, green])
    np.testing.assert_allclose((database**2).sum(axis=1), 1.0, rtol=1e-6)
    scores = histogram_scorer(database)(colour_histograms([red, half]))
    np.testing.assert_allclose(scores[0], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(scores[1], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    with pytest.raises(ValueError, match="image 0"):
        colour_histograms([np.zeros((4, 4), np.uint8)])


@pytest.mark.parametrize(
    ("kappa", "maximum", "kept"), [(1.0, 1.57, True), (1.0, 1.0, False), (1.57, 1.57, False)]
)
def test_calibration_source_says_when_the_guard_kept_kappa_one(kappa, maximum, kept):
    from geocells.eval.summary import CalibrationSource
    from geocells.io import CalibrationReport

    report = CalibrationReport(
        split="val", dataset="/data", dataset_sha256="ab", queries=10, radius_m=100.0,
        recall=0.5, recall_kappa_1=0.4, median_error_m=90.0, grid=[0.05, 20, 41],
        kappa_max_recall=maximum, max_gain_over_kappa_1=0.1, max_gain_z=1.2, min_gain_z=2.0,
        ece=0.1, top1_accuracy=0.5,
    )  # fmt: skip
    meta = DatabaseMeta(
        count=1, dim=2, cell_level=16, proto_level=15, tile_size_m=154.0, tile_px=32,
        model_sha256="x", kappa=kappa, kappa_calibrated=True, calibration=report,
    )  # fmt: skip
    source = CalibrationSource.of(meta, "ab")
    assert source.kept_kappa_1 is kept and source.same_dataset
    assert source.kappa_max_recall == maximum
    assert not CalibrationSource.of(meta, "cd").same_dataset


def test_streamed_evaluation_matches_dense_scoring_and_uses_the_search():
    """Blocks smaller than the database, ranks and top-k equal a dense [Q, N] reference;
    a method with ``search`` answers through it while ranks stay exact."""
    from geocells.eval import methods as methods_module

    rng = np.random.default_rng(0)
    n, dim, q = 3000, 8, 40
    codes = rng.normal(size=(n, dim)).astype(np.float16)
    lat, lon = 48 + rng.uniform(0, 0.02, n), 11 + rng.uniform(0, 0.03, n)
    queries = rng.normal(size=(q, dim)).astype(np.float32)
    q_lat, q_lon = lat[:q] + 1e-4, lon[:q]
    scorer = methods_module.codes_scorer((codes, 1.0))
    method = MethodDatabase("m", "m", lat, lon, scorer, 0)
    old = methods_module.BLOCK_SCORES
    methods_module.BLOCK_SCORES = 700 * q  # blocks of 700 items (the minimum is 1024)
    try:
        result = evaluate_method(method, queries, q_lat, q_lon, top_k=5, chunk_size=16)
    finally:
        methods_module.BLOCK_SCORES = old
    dense = queries @ codes.astype(np.float32).T
    order = np.lexsort((np.broadcast_to(np.arange(n), dense.shape), -dense), axis=1)[:, :5]
    np.testing.assert_array_equal(result.top_index, order)
    distances = haversine_m(
        np.repeat(q_lat, n), np.repeat(q_lon, n), np.tile(lat, q), np.tile(lon, q)
    ).reshape(q, n)
    from geocells.scoring.metrics import rank_within

    np.testing.assert_array_equal(result.ranks, rank_within(dense, distances))
    assert result.ranks.min() >= 1 and result.exact_top1 is None

    def reversed_search(features, k):  # a deliberately different "deployed" answer
        rows = order[: len(features), ::-1][:, :k]
        return np.zeros(rows.shape, np.float32), rows

    method.search = reversed_search
    served = evaluate_method(method, queries, q_lat, q_lon, top_k=5, chunk_size=q)
    np.testing.assert_array_equal(served.top_index, order[:, ::-1])
    np.testing.assert_array_equal(served.exact_top1, order[:, 0])
    np.testing.assert_array_equal(served.ranks, result.ranks)
