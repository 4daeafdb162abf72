"""What used to pass silently or unclearly (issue 22, item 12): a CSV manifest beside the
Parquet one, calibrating on test or train, options of other importers, a model that fails
to load in ``serve``."""

import asyncio
import logging
import shutil

import pytest

from fixtures_import import write_image
from fixtures_logs import captured_warnings
from geocells.calibrate import stage as calibrate
from geocells.cli import main
from geocells.data.dataset import Dataset


def test_a_manifest_csv_beside_the_parquet_one_is_named(micro_dataset, tmp_path, caplog):
    dataset = shutil.copytree(micro_dataset, tmp_path / "ds")
    (dataset / "ground" / "manifest.csv").write_text("image_id,path,lat,lon,split\n")
    with captured_warnings(caplog, "geocells.data.dataset"):
        manifest = Dataset.open(dataset).manifest
    assert len(manifest) > 0  # the Parquet one is read
    assert "has both ground/manifest.parquet and ground/manifest.csv" in caplog.text
    assert "the CSV is ignored" in caplog.text


def test_calibrate_refuses_test_and_warns_on_train(micro_db, micro_dataset, tmp_path, caplog):
    db = shutil.copytree(micro_db, tmp_path / "db")
    before = (db / "meta.json").read_bytes()
    with pytest.raises(ValueError, match="--split test: refused"):
        calibrate.run(calibrate.CalibrateConfig(progress=False), db, micro_dataset, split="test")
    assert (db / "meta.json").read_bytes() == before
    with (  # the micro dataset has no train images: the warning comes first
        captured_warnings(caplog, "geocells.calibrate.stage"),
        pytest.raises(ValueError, match="no 'train' images"),
    ):
        calibrate.run(calibrate.CalibrateConfig(progress=False), db, micro_dataset, split="train")
    assert "--split train: the model was trained on these images" in caplog.text


def test_import_csv_refuses_options_of_other_importers(tmp_path, capsys):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "p.csv").write_text("file,lat,lon\na.jpg,45,5\n")
    argv = ["import", "csv", str(tmp_path / "p.csv"), "--out", str(tmp_path / "ds")]
    assert main([*argv, "--val-fraction", "1.5", "--cities", "Nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not options of `import csv`: --val-fraction (vigor/osv5m only)" in err
    assert "--cities (vigor only)" in err
    assert not (tmp_path / "ds" / "ground" / "manifest.parquet").exists()
    assert main([*argv, "--split-fractions", "1,0,0"]) == 0  # its own options still work


def test_serve_logs_a_model_that_fails_to_load_in_one_line(micro_db, tmp_path, caplog):
    from geocells.serve.config import ServeConfig
    from geocells.serve.service import Service

    broken = shutil.copytree(micro_db, tmp_path / "db")
    (broken / "model" / "last.safetensors").write_bytes(b"not the model")
    service = Service(ServeConfig(db=str(broken)))
    with captured_warnings(caplog, "geocells.serve.service", logging.INFO):
        asyncio.run(service.load())
    errors = {id(r): r for r in caplog.records if r.levelno >= logging.ERROR}.values()
    [message] = {record.getMessage() for record in errors}  # one line (a handler may see it
    assert all(record.exc_info is None for record in errors)  # twice under xdist)
    assert "\n" not in message and "does not match the model" in message
    assert "Traceback" not in caplog.text
    assert service.error and "does not match the model" in service.error
    caplog.clear()
    with captured_warnings(
        caplog, "geocells.serve.service", logging.DEBUG
    ):  # -v: the traceback too
        asyncio.run(Service(ServeConfig(db=str(broken))).load())
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)
