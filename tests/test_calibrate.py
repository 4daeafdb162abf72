"""κ sweep on a constructed case, and the confidence model."""

import json

import numpy as np
import pytest

from geocells.scoring.confidence import (
    ConfidenceModel,
    cross_fitted_ece,
    expected_calibration_error,
    fit_confidence_model,
    reference_embeddings,
    typicality,
)
from geocells.scoring.kappa import (
    guard_kappa,
    kappa_grid,
    paired_gain,
    recall_by_kappa,
    recall_curve,
    select_kappa,
    similarity_chunks,
    sweep_top1,
)


def _constructed_case(best_kappa, n_queries=60, seed=0):
    """Each query's true cell wins exactly for κ in (lo, hi), an interval around best_kappa.

    Cells 3q, 3q+1, 3q+2: the true cell, an aerial decoy that wins for κ < lo and a
    prototype decoy that wins for κ > hi. Cells are 1 km apart along a meridian.
    """
    rng = np.random.default_rng(seed)
    lo = best_kappa / rng.uniform(1.05, 1.6, n_queries)
    hi = best_kappa * rng.uniform(1.05, 1.6, n_queries)
    n_cells = 3 * n_queries
    sim_a = np.full((n_queries, n_cells), -1.0)
    sim_p = np.full((n_queries, n_cells), -1.0)
    q = np.arange(n_queries)
    a_true, p_true, step = 0.3, 0.4, 0.1
    sim_a[q, 3 * q], sim_p[q, 3 * q] = a_true, p_true
    sim_a[q, 3 * q + 1], sim_p[q, 3 * q + 1] = a_true + step, p_true - step / lo
    sim_a[q, 3 * q + 2], sim_p[q, 3 * q + 2] = a_true - step, p_true + step / hi
    cell_lat = 40.0 + np.arange(n_cells) * 0.009
    cell_lon = np.full(n_cells, 3.0)
    return sim_a, sim_p, cell_lat, cell_lon, cell_lat[3 * q], cell_lon[3 * q], lo, hi


def _chunks(sim_a, sim_p, size):
    for start in range(0, sim_a.shape[1], size):
        yield start, sim_a[:, start : start + size], sim_p[:, start : start + size]


@pytest.mark.parametrize("best_kappa", [0.2, 3.0])
def test_sweep_finds_the_known_best_kappa(best_kappa):
    sim_a, sim_p, cell_lat, cell_lon, q_lat, q_lon, lo, hi = _constructed_case(best_kappa)
    grid = kappa_grid(0.05, 20, 61)
    rows, _ = sweep_top1(_chunks(sim_a, sim_p, 7), grid)
    recall, median = recall_curve(rows, cell_lat, cell_lon, q_lat, q_lon)
    for k, kappa in enumerate(grid):  # recall is exactly the share of intervals holding κ
        assert recall[k] == pytest.approx(np.mean((lo < kappa) & (kappa < hi)))
    chosen = grid[select_kappa(grid, recall, median)]
    assert lo.max() < chosen < hi.min()
    assert recall.max() == 1.0 and recall.min() < 0.5


def test_recall_by_kappa_on_hand_counted_errors():
    errors = np.array([[10.0, 100.0, 250.0, 40.0], [300.0, 101.0, 99.0, 500.0]])
    hits, recall, median = recall_by_kappa(errors, radius_m=100.0)
    assert hits.tolist() == [[True, True, False, True], [False, False, True, False]]
    assert recall.tolist() == [0.75, 0.25]  # 100 m itself counts (inclusive)
    assert median.tolist() == [70.0, 200.5]


def test_paired_gain_on_hand_counted_queries():
    better = np.array([1, 1, 0, 1, 0, 0, 1, 0], bool)
    reference = np.array([1, 0, 0, 0, 1, 0, 1, 0], bool)
    gain, z = paired_gain(better, reference)
    # differences 0, 1, 0, 1, -1, 0, 0, 0: mean 1/8, population std sqrt(3/8 - 1/64)
    assert gain == pytest.approx(1 / 8)
    assert z == pytest.approx((1 / 8) / (np.sqrt(3 / 8 - 1 / 64) / np.sqrt(8)))
    assert paired_gain(better, better) == (0.0, 0.0)


def test_guard_keeps_kappa_one_on_noise_and_moves_on_a_real_gain():
    grid = kappa_grid(0.05, 20, 41)
    one = int(np.flatnonzero(grid == 1.0)[0])
    rng = np.random.default_rng(0)
    noise = rng.random((len(grid), 2000)) < 0.04  # every κ the same 4 %: a flat, noisy curve
    best = int(noise.mean(axis=1).argmax())
    assert best != one
    assert guard_kappa(grid, noise, best, min_gain_z=2.0)[0] == one
    assert guard_kappa(grid, noise, best, min_gain_z=0.0)[0] == best
    real = noise.copy()
    real[best] |= rng.random(2000) < 0.05  # about 5 points more hits at this κ, same queries
    assert guard_kappa(grid, real, best, min_gain_z=2.0)[0] == best


def test_sweep_matches_brute_force_across_chunks():
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    aerial = rng.normal(size=(50, 16)).astype(np.float16)
    proto = rng.normal(size=(50, 16)).astype(np.float16)
    grid = np.array([0.1, 1.0, 5.0])
    rows, scores = sweep_top1(similarity_chunks(queries, aerial, proto, chunk_size=8), grid)
    for k, kappa in enumerate(grid):
        full = queries @ aerial.astype(np.float32).T + kappa * queries @ proto.astype(np.float32).T
        np.testing.assert_array_equal(rows[k], full.argmax(axis=1))
        np.testing.assert_allclose(scores[k], full.max(axis=1), rtol=1e-5)


def test_kappa_grid_is_logarithmic_and_holds_one():
    grid = kappa_grid(0.05, 20, 41)
    assert grid[0] == pytest.approx(0.05) and grid[-1] == pytest.approx(20)
    assert 1.0 in grid
    with pytest.raises(ValueError, match="bad kappa grid"):
        kappa_grid(0, 20)


def test_ece_on_hand_computed_bins():
    probability = np.array([0.05, 0.05, 0.95, 0.95])
    correct = np.array([0, 1, 1, 1])
    # bin 0: |0.5 - 0.05| = 0.45 (2 items); bin 9: |1 - 0.95| = 0.05 (2 items)
    assert expected_calibration_error(probability, correct) == pytest.approx(0.25)


def _scores_with_known_confidence(n, seed):
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.8, 1.2, n)
    gaps = np.sort(rng.exponential(0.05, (n, 4)), axis=1)
    scores = np.hstack([top[:, None], top[:, None] - gaps])
    truth = 1 / (1 + np.exp(-(40 * (scores[:, 0] - scores[:, 1]) - 1.5)))
    correct = np.zeros(scores.shape, dtype=bool)
    correct[:, 0] = rng.uniform(size=n) < truth
    # Val images resemble one another (one direction plus noise), as street views do.
    embeddings = (np.eye(16)[0] + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return scores, correct, truth, embeddings


def test_confidence_model_recovers_a_logistic_truth():
    scores, correct, truth, embeddings = _scores_with_known_confidence(4000, seed=0)
    model = fit_confidence_model(scores, correct, embeddings)
    near = typicality(embeddings, reference_embeddings(embeddings), model.neighbours)
    top1 = model.predict(scores, near)[:, 0]
    assert np.abs(top1 - truth).mean() < 0.05
    assert expected_calibration_error(top1, correct[:, 0]) < 0.03
    assert cross_fitted_ece(scores, correct, embeddings) < 0.04
    assert np.all(model.predict(scores)[:, 1:].mean(axis=0) < 0.05)  # never right at rank > 1
    again = ConfidenceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(scores, near), model.predict(scores, near))
    assert model.base_rate == pytest.approx(correct[:, 0].mean())


def test_confidence_says_no_more_than_the_base_rate_outside_the_val_data():
    """A top-1 score above every val score (a blank image is "close" to everything) or an
    embedding unlike the val images gets at most the val base rate, however good its
    margin; in the val range the same margin is confident."""
    scores, correct, _, embeddings = _scores_with_known_confidence(2000, seed=1)
    model = fit_confidence_model(scores, correct, embeddings)
    reference = reference_embeddings(embeddings)
    clear = np.array([[1.0, 0.8, 0.7]])  # margin 0.2: the truth says ~100 %
    beyond = clear + 0.5  # the same margin, top score above every val top-1
    typical = typicality(embeddings[:1], reference, model.neighbours)
    assert model.predict(clear, typical)[0, 0] > 0.9
    assert model.predict(beyond, typical)[0, 0] <= model.base_rate
    unlike = typicality(-np.eye(16)[:1], reference, model.neighbours)  # far from all val
    assert unlike < model.typicality_floor
    assert model.predict(clear, unlike)[0, 0] <= model.base_rate
    assert model.predict(clear)[0, 0] > 0.9  # without embeddings: no typicality cap


def test_confidence_needs_two_ranked_scores_and_refuses_old_models():
    with pytest.raises(ValueError, match="k>=2"):
        fit_confidence_model(np.ones((3, 1)), np.ones((3, 1), dtype=bool), np.ones((3, 4)))
    old = {"features": ["score", "gap_to_top", "top_margin"], "weights": [1, 2, 3], "bias": 0}
    with pytest.raises(ValueError, match="version"):
        ConfidenceModel.from_dict(old)


def test_calibrate_cli_rewrites_kappa_and_confidence(micro_db, tmp_path, capsys):
    import json
    import shutil

    from geocells.cli import main

    db = shutil.copytree(micro_db, tmp_path / "db")
    meta = json.loads((db / "meta.json").read_text())
    meta.update(kappa=1.0, kappa_calibrated=False)
    del meta["confidence"], meta["calibration"]
    (db / "meta.json").write_text(json.dumps(meta))
    assert main(["calibrate", str(db), "max_queries=10", "--config", "quick", "kappa_steps=5"]) == 0
    assert "val recall@1 within 100 m" in capsys.readouterr().out
    meta = json.loads((db / "meta.json").read_text())
    assert meta["kappa_calibrated"] and meta["calibration"]["queries"] == 10
    assert meta["calibration"]["dataset_sha256"] == meta["dataset_sha256"]  # the build's
    assert meta["kappa"] in kappa_grid(0.05, 20, 5)
    assert "weights" in meta["confidence"]
    assert main(["calibrate", str(db), "--split", "nope"]) == 2
    assert "unknown split 'nope'" in capsys.readouterr().err
    # A report this geocells cannot read: the database is refused naming calibrate, and
    # calibrate (which replaces the report) runs.
    from geocells.db.store import Database
    from geocells.io import ArtifactError

    meta["calibration"]["format_version"] = 99
    (db / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"format_version 99.*geocells calibrate DB"):
        Database.open(db)
    assert main(["calibrate", str(db), "max_queries=10", "--config", "quick", "kappa_steps=5"]) == 0
    assert Database.open(db).meta.calibration.queries == 10


def test_calibrate_and_eval_share_the_handles_they_are_given(micro_db, micro_dataset, tmp_path):
    """The pipeline opens the database and dataset once: calibrate updates the handle's
    meta in place (eval on it sees the new κ) and both reuse one loaded model."""
    import json
    import shutil

    from geocells.calibrate import stage as calibrate
    from geocells.data.dataset import Dataset
    from geocells.db.store import Database
    from geocells.eval.evaluate import EvalOptions
    from geocells.eval.evaluate import run as evaluate

    db = shutil.copytree(micro_db, tmp_path / "db")
    meta = json.loads((db / "meta.json").read_text())
    meta.update(kappa=1.0, kappa_calibrated=False)
    (db / "meta.json").write_text(json.dumps(meta))
    database, dataset = Database.open(db), Dataset.open(micro_dataset)
    assert Database.of(database) is database and Dataset.of(dataset) is dataset
    model = database.load_model("cpu")
    assert database.load_model("cpu") is model  # loaded once per handle and device
    cfg = calibrate.CalibrateConfig(progress=False, kappa_steps=5, device="cpu")
    assert calibrate.run(cfg, database, dataset, split="val") == db
    # The handle holds what calibrate wrote, as a fresh open of the folder does.
    assert database.meta.kappa_calibrated
    assert database.meta == Database.open(db).meta
    options = EvalOptions(
        progress=False, interactive_map=False, colour_histogram=False, ground_retrieval=False,
        compare_ivfpq=False, device="cpu",
    )  # fmt: skip
    report = evaluate(options, database, dataset, tmp_path / "report", split="val")
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["kappa"] == database.kappa and summary["kappa_calibrated"]
    assert summary["methods"]["hybrid"]["metrics"]["R@1@100m"] == pytest.approx(
        database.meta.calibration.recall
    )
    assert database.load_model("cpu") is model


def test_the_index_calibrate_writes_holds_the_kappa_it_chose(micro_db, micro_dataset, tmp_path):
    """Calibrate hands its open database (κ just set) to the index writer: the saved
    IVF-PQ index is built for the new κ, not the one on disk when calibrate started."""
    import json
    import shutil

    from geocells.calibrate import stage as calibrate
    from geocells.db.store import Database
    from geocells.search.index_file import INDEX_FILE
    from geocells.search.index_meta import SearchIndexMeta

    db = shutil.copytree(micro_db, tmp_path / "db")
    meta = json.loads((db / "meta.json").read_text())
    meta.update(kappa=7.5, kappa_calibrated=False)
    (db / "meta.json").write_text(json.dumps(meta))
    database = Database.open(db)
    cfg = calibrate.CalibrateConfig(
        progress=False, kappa_steps=5, kappa_max=4.0, device="cpu", ann="ivfpq"
    )
    calibrate.run(cfg, database, micro_dataset, split="val")
    index_meta = SearchIndexMeta.read(SearchIndexMeta.path_of(db / INDEX_FILE))
    assert database.meta.kappa <= 4.0
    assert index_meta.index_kappa == pytest.approx(database.meta.kappa)
    assert Database.open(db).meta.kappa == database.meta.kappa
