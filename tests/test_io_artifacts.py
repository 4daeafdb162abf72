"""Artifacts as versioned contracts: old checkpoints and databases load or are refused clearly."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from geocells.db.store import DATABASE_OUTPUT, Database
from geocells.io import (
    ArtifactError,
    CalibrationReport,
    RunInfo,
    atomic_write,
    dataset_of_run,
    write_json,
)
from geocells.models import ModelConfig, build_model, load_model
from geocells.models.card import ModelCard
from geocells.outputs import OutputFolder
from geocells.train.config import ExperimentConfig, experiment_from_card

CELLS = np.array([11, 23, 35], dtype=np.uint64)
SMALL = ModelConfig(
    backbone="test_resnet", clusters=4, cluster_dim=8, global_dim=16, hidden_dim=32, dim=16,
    input_size=96, aerial_input_size=96,
)  # fmt: skip


def _v1_checkpoint(path, experiment: dict) -> None:
    """A checkpoint as geocells-model-v1 wrote it: the whole experiment config in metadata."""
    torch.manual_seed(0)
    card = ModelCard(model=SMALL, cell_level=17, prototype_level=15, aerial_tile_m=120.0)
    model = build_model(card, CELLS, load_pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"geocells_format": "geocells-model-v1", "geocells_config": json.dumps(experiment)}
    save_file(state, str(path), metadata=meta)


def _old_experiment() -> dict:
    """An experiment config of an older/newer trainer: unknown keys in several groups."""
    from geocells.config import config_to_dict

    data = config_to_dict(ExperimentConfig(model=SMALL))
    data["data"].update(cell_level=17, aerial_tile_m=120.0)
    data["refit"]["renamed_setting"] = 3  # a trainer key this version does not know
    data["schedule"] = {"warmup": 10}  # a whole group this version does not know
    return data


def test_checkpoint_with_extra_experiment_keys_loads(tmp_path):
    path = tmp_path / "last.safetensors"
    _v1_checkpoint(path, _old_experiment())
    model = load_model(path)
    assert (model.cell_level, model.prototype_level, model.aerial_tile_m) == (17, 15, 120.0)
    assert model.card.model == SMALL
    assert model.card.experiment["refit"]["renamed_setting"] == 3  # kept as provenance
    np.testing.assert_array_equal(model.prototypes.cells, CELLS)
    # The trainer's view drops what it does not know, keeps the rest.
    experiment = experiment_from_card(model.card)
    assert experiment.data.cell_level == 17 and experiment.model == SMALL


@pytest.mark.parametrize("version", [1, 2])
def test_a_card_without_levels_or_tile_size_is_refused_with_the_fix(tmp_path, version):
    """No silent 154 m: the refusal names the missing fields and how to record them."""
    from geocells.models.geomodel import record_geometry

    path = tmp_path / "last.safetensors"
    experiment = _old_experiment()
    del experiment["data"]["cell_level"], experiment["data"]["aerial_tile_m"]
    _v1_checkpoint(path, experiment)
    if version == 2:  # a v2 card that lost them
        model = load_model_unchecked(path)
        card = {**model.card.to_dict(), "experiment": experiment}
        del card["cell_level"], card["aerial_tile_m"]
        metadata = {"geocells_format": "geocells-model-v2", "geocells_card": json.dumps(card)}
        save_file(model.state_dict(), str(path), metadata=metadata)
    with pytest.raises(ValueError) as refused:
        load_model(path)
    text = str(refused.value)
    assert "does not record data.cell_level, data.aerial_tile_m" in text
    assert "geocells train DATASET --out RUN" in text and "record_geometry(" in text
    record_geometry(path, cell_level=17, prototype_level=15, aerial_tile_m=120.0)
    model = load_model(path)
    assert (model.cell_level, model.prototype_level, model.aerial_tile_m) == (17, 15, 120.0)
    np.testing.assert_array_equal(model.prototypes.cells, CELLS)


def load_model_unchecked(path):
    """A model from a v1 checkpoint lacking levels, rebuilt at the levels it was saved with."""
    card = ModelCard(model=SMALL, cell_level=17, prototype_level=15, aerial_tile_m=120.0)
    model = build_model(card, CELLS, load_pretrained=False)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model


def test_levels_have_one_home():
    """The training config's data section and the card share CellGeometry's defaults."""
    from geocells.models.card import CellGeometry
    from geocells.train.config import DataConfig

    assert issubclass(DataConfig, CellGeometry)
    with pytest.raises(TypeError):
        ModelCard(model=SMALL)  # no default levels on a card
    with pytest.raises(ValueError, match=r"data\.aerial_tile_m must be positive"):
        DataConfig(aerial_tile_m=0).check_geometry()


def test_v2_card_round_trip_and_refusals(tmp_path):
    card = ModelCard.from_experiment(ExperimentConfig(model=SMALL))
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    bad_model = {**card.to_dict(), "model": {**card.to_dict()["model"], "depth_new": 3}}
    with pytest.raises(ArtifactError, match="depth_new"):
        ModelCard.from_dict(bad_model, "x.safetensors")
    without_model = {k: v for k, v in card.to_dict().items() if k != "model"}
    with pytest.raises(ArtifactError, match=r"x.safetensors: the model card has no model config"):
        ModelCard.from_dict(without_model, "x.safetensors")  # never the default network
    with pytest.raises(ArtifactError, match=r"format_version 9.*geocells train"):
        ModelCard.from_dict({**card.to_dict(), "format_version": 9}, "x.safetensors")
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"geocells_format": "other-v7"})
    with pytest.raises(ValueError, match=r"other-v7.*geocells-model-v2"):
        load_model(path)


def _v1_meta(count: int, dim: int) -> dict:
    """meta.json as the version-1 build wrote it (nested levels and model)."""
    return {
        "format_version": 1, "count": count, "dim": dim, "kappa": 2.5,
        "kappa_calibrated": True, "levels": {"cell": 16, "proto": 15}, "tile_size_m": 154.0,
        "tile_px": 32, "model": {"file": "model/last.safetensors", "sha256": "ab" * 32},
        "dataset": "/data/x", "dataset_sha256": "cd" * 32, "cells_without_aerial": 0,
        "index": {"chunk_size": 2048}, "region": {"name": "r", "area_km2": 2.0},
        "confidence": {"features": ["score"]}, "calibration": _old_report(),
    }  # fmt: skip


def _old_report() -> dict:
    """The calibration report of an early ``calibrate`` (no version, dataset or κ guard)."""
    return {
        "split": "val", "queries": 40, "radius_m": 100.0, "recall": 0.3, "recall_kappa_1": 0.2,
        "median_error_m": 250.0, "grid": [0.05, 20.0, 41], "ece": 0.05, "top1_accuracy": 0.3,
    }  # fmt: skip


def _write_arrays(db, count: int, dim: int) -> None:
    db.mkdir(parents=True)
    np.save(db / "cells.npy", np.arange(1, count + 1, dtype=np.uint64))
    for name in ("aerial", "proto"):
        np.save(db / f"{name}.npy", np.zeros((count, dim), np.float16))


def test_database_of_version_1_loads_and_a_newer_one_is_refused(tmp_path):
    db = tmp_path / "db"
    _write_arrays(db, 5, 4)
    write_json(db / "meta.json", _v1_meta(5, 4))
    database = Database.open(db)
    assert (database.cell_level, database.meta.proto_level, database.kappa) == (16, 15, 2.5)
    assert database.model_path == db / "model" / "last.safetensors"
    assert database.meta.model_sha256 == "ab" * 32 and database.meta.region["area_km2"] == 2.0
    database.update_meta(OutputFolder(db, DATABASE_OUTPUT), kappa=1.5)  # as the current version
    again = json.loads((db / "meta.json").read_text())
    assert again["format_version"] == 2 and again["kappa"] == 1.5 and "levels" not in again
    assert Database.open(db).meta == database.meta
    for version in (3, None):
        meta = _v1_meta(5, 4)
        if version is None:
            del meta["format_version"]
        else:
            meta["format_version"] = version
        write_json(db / "meta.json", meta)
        found = "no format_version" if version is None else "format_version 3"
        with pytest.raises(ArtifactError, match=rf"{found}.*reads version 2.*geocells index"):
            Database.open(db)


def test_version_1_database_without_levels_is_refused_with_the_rebuild_command(tmp_path):
    db = tmp_path / "db"
    _write_arrays(db, 2, 4)
    meta = _v1_meta(2, 4)
    del meta["levels"]
    write_json(db / "meta.json", meta)
    with pytest.raises(ArtifactError, match=r"without levels/model.*geocells index RUN"):
        Database.open(db)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_run_info_reads_old_run_json_and_names_missing_ones(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"dataset": "/data/d"}))  # pre-version file
    assert dataset_of_run(run) == dataset_of_run(run / "checkpoints" / "last.safetensors")
    assert str(dataset_of_run(run)) == "/data/d"
    assert dataset_of_run(run, override=tmp_path) == tmp_path
    RunInfo(dataset="/data/e", dataset_sha256="f").save(run)
    assert RunInfo.load(run).dataset == "/data/e"
    shutil.rmtree(run)
    run.mkdir()
    with pytest.raises(ArtifactError, match="does not record its dataset"):
        dataset_of_run(run)


def test_embed_files_skips_unreadable_images_and_reports_them(tmp_path):
    from PIL import Image

    model = build_model(SMALL, CELLS, load_pretrained=False)  # default levels
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = [good, broken, tmp_path / "missing.jpg", good]

    def sizes(images):
        return np.array([[image.shape[0]] for image in images])

    embedded = model.ground.embed_files(paths, batch_size=3, extra=sizes)
    assert embedded.kept.tolist() == [0, 3]
    assert [position for position, _ in embedded.failures] == [1, 2]
    assert embedded.embeddings.shape == (2, SMALL.dim)
    assert embedded.extra.tolist() == [[20], [20]]
    np.testing.assert_allclose(embedded.embeddings[0], embedded.embeddings[1], rtol=1e-5)
    np.testing.assert_allclose(embedded.embeddings[0], model.ground.encode([np.asarray(
        Image.open(good).convert("RGB"))])[0], rtol=1e-5)  # fmt: skip


def test_dataset_info_round_trip_and_missing_file(tmp_path):
    from geocells.io import DatasetInfo

    info = DatasetInfo(source="synth", fingerprint="ab")
    info.save(tmp_path)
    assert DatasetInfo.load(tmp_path) == info
    assert json.loads((tmp_path / "dataset.json").read_text())["format_version"] == 1
    with pytest.raises(ArtifactError, match=r"dataset.json not found.*geocells synth"):
        DatasetInfo.load(tmp_path / "elsewhere")


def test_a_version_less_calibration_report_migrates_and_an_unusable_one_is_refused(tmp_path):
    db = tmp_path / "db"
    _write_arrays(db, 5, 4)
    write_json(db / "meta.json", _v1_meta(5, 4))
    report = Database.open(db).meta.calibration
    assert isinstance(report, CalibrationReport) and report.recall == 0.3
    # Before calibrate recorded its dataset it used the build's; before the κ = 1 guard it
    # took the grid's maximum (the κ in meta.json), z unmeasured.
    assert (report.dataset, report.dataset_sha256) == ("/data/x", "cd" * 32)
    assert (report.kappa_max_recall, report.max_gain_z, report.min_gain_z) == (2.5, None, 0.0)
    assert report.max_gain_over_kappa_1 == pytest.approx(0.1)
    Database.open(db).update_meta(OutputFolder(db, DATABASE_OUTPUT), kappa=2.5)  # typed, versioned
    saved = json.loads((db / "meta.json").read_text())["calibration"]
    assert saved["format_version"] == CalibrationReport.VERSION and saved["dataset"] == "/data/x"
    assert Database.open(db).meta.calibration == report
    for damage in ({"recall": None}, {"format_version": 7}):
        meta = _v1_meta(5, 4)
        meta["calibration"] = {k: v for k, v in _old_report().items() if k not in damage}
        meta["calibration"].update({k: v for k, v in damage.items() if v is not None})
        write_json(db / "meta.json", meta)
        with pytest.raises(ArtifactError, match=r"calibration report .*geocells calibrate DB"):
            Database.open(db)
        # geocells calibrate replaces the report, so it opens the database without it.
        assert Database.open(db, recalibrating=True).meta.calibration is None


def _old_metrics() -> dict:
    """metrics.json of an early eval: no version, strata definitions or search comparison."""
    hybrid = {"label": "hybrid", "database_items": 3, "storage_bytes": 10, "bytes_per_km2": 5.0,
              "metrics": {"R@1@100m": 0.5}}  # fmt: skip
    return {
        "split": "test", "queries": 4, "train_images": 8, "database": "/db", "dataset": "/d",
        "region_area_km2": 2.0, "levels": {"cell": 16, "proto": 15}, "kappa": 1.0,
        "kappa_calibrated": False, "methods": {"hybrid": hybrid, "aerial": hybrid},
        "strata": {}, "options": {},
    }  # fmt: skip


def test_eval_summary_round_trips_migrates_and_refuses_a_newer_version(tmp_path):
    from geocells.eval.summary import EvalSummary
    from geocells.eval.table import results_table_text

    (tmp_path / "metrics.json").write_text(json.dumps(_old_metrics()))  # in table order
    summary = EvalSummary.load(tmp_path)
    assert (summary.search, summary.calibration, summary.strata_definitions) == (None, None, {})
    assert list(summary.methods) == ["hybrid", "aerial"]
    summary.save(tmp_path)
    assert list(json.loads((tmp_path / "metrics.json").read_text())["methods"]) == [
        "hybrid",
        "aerial",
    ]  # table order kept, not sorted
    assert EvalSummary.load(tmp_path) == summary
    assert "| hybrid | – | 50.0 % |" in results_table_text(tmp_path / "metrics.json")
    for bad, message in (({"format_version": 9}, "format_version 9"), ({"split": None}, "split")):
        data = {**_old_metrics(), **bad}
        data = {k: v for k, v in data.items() if v is not None}
        write_json(tmp_path / "metrics.json", data)
        with pytest.raises(ArtifactError, match=rf"{message}.*geocells eval DB --out REPORT"):
            EvalSummary.load(tmp_path)


def test_refit_record_round_trips_reads_an_earlier_file_and_refuses_a_newer(tmp_path):
    """refit.json (refit stage -> resolve_checkpoint): stats at the top level as before."""
    from geocells.models.card import RefitRecord

    earlier = {"source": "last.safetensors", "source_sha256": "ab", "settings": {"refit": {}},
               "seconds": 1.5, "rows_total": 9, "loss_after": None}  # fmt: skip
    write_json(tmp_path / "refit.json", earlier)
    record = RefitRecord.load(tmp_path)
    assert record.source_sha256 == "ab" and record.stats == {"rows_total": 9, "loss_after": None}
    record.save(tmp_path)
    again = json.loads((tmp_path / "refit.json").read_text())
    assert again == {**earlier, "format_version": 1} and RefitRecord.load(tmp_path) == record
    write_json(tmp_path / "refit.json", {**earlier, "format_version": 2})
    with pytest.raises(ArtifactError, match=r"format_version 2.*geocells refit RUN --overwrite"):
        RefitRecord.load(tmp_path)
