"""Validation during training scores the hybrid the database serves (``scoring/``)."""

from pathlib import Path

import numpy as np
import pytest

from geocells.data.dataset import Dataset
from geocells.db.store import Database
from geocells.eval.evaluate import EvalOptions, run
from geocells.eval.summary import EvalSummary
from geocells.models import load_model
from geocells.train.validate import ValSet, database_codes, validate

EVERYTHING = 10**6


@pytest.fixture(scope="module")
def val_of_tiny_run(tiny_run, tiny_dataset):
    model = load_model(Path(tiny_run), device="cpu")
    val = ValSet.build(Dataset.open(tiny_dataset), model, EVERYTHING, EVERYTHING, seed=0)
    return model, val


def test_validation_gallery_holds_the_database_codes(val_of_tiny_run, tiny_db):
    model, val = val_of_tiny_run
    database = Database.open(tiny_db)
    np.testing.assert_array_equal(val.cells, np.asarray(database.cells))
    aerial, proto = database_codes(model, val)
    # Same crops, same encoder, same upsampling (the index default), same float16 storage.
    np.testing.assert_allclose(aerial, np.asarray(database.aerial), atol=2e-3)
    np.testing.assert_array_equal(proto, np.asarray(database.proto))
    assert not val.covered.all() or (np.abs(aerial).sum(axis=1) > 0).all()


@pytest.mark.slow
def test_validation_and_eval_give_the_same_recall(val_of_tiny_run, tiny_db, tmp_path):
    model, val = val_of_tiny_run
    options = EvalOptions(
        progress=False,
        ground_retrieval=False,
        colour_histogram=False,
        compare_ivfpq=False,
        interactive_map=False,
        examples_per_kind=0,
        device="cpu",
    )
    out = run(options, tiny_db, None, tmp_path / "report", split="val")
    methods = EvalSummary.load(out).methods  # eval's one reader of metrics.json
    results = validate(model, val)
    assert results["val_queries"] == methods["hybrid_k1"]["metrics"]["queries"]
    assert results["val_hybrid_r100"] == methods["hybrid_k1"]["metrics"]["R@1@100m"]
    assert results["val_aerial_r100"] == methods["aerial"]["metrics"]["R@1@100m"]
    assert results["val_prototype_r100"] == methods["proto_lp"]["metrics"]["R@1@100m"]
