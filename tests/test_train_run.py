"""Training on the tiny synthetic dataset: outputs, exact resume, Ctrl-C, CLI, torchrun."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_train import train_tiny
from geocells.cli import main
from geocells.models import load_model
from geocells.train import step as step_module
from geocells.train.metrics import read_metrics
from geocells.train.trainer import TrainingInterrupted


def _losses(run: Path) -> dict[int, str]:
    return {
        int(r["step"]): r["loss"] for r in read_metrics(run / "metrics.csv") if r["kind"] == "train"
    }


def test_run_writes_config_checkpoints_metrics_and_plot(tiny_run):
    for name in ("config.yaml", "metrics.csv", "loss.png", "run.json", "checkpoints/last.json"):
        assert (tiny_run / name).is_file(), name
    assert sorted(p.name for p in (tiny_run / "checkpoints").glob("step-*.safetensors")) == [
        "step-00000003.optim.safetensors",
        "step-00000003.safetensors",
        "step-00000006.optim.safetensors",
        "step-00000006.safetensors",
    ]
    rows = read_metrics(tiny_run / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 1 and 0.0 <= float(val[0]["val_aerial_r100"]) <= 1.0
    model = load_model(tiny_run)
    assert model.prototype_level == 15 and model.cell_level == 16


@pytest.mark.parametrize("second", [False, True], ids=["ctrl-c", "ctrl-c-twice"])
def test_resume_after_ctrl_c_gives_identical_losses(
    tiny_run, tiny_dataset, tmp_path, monkeypatch, second
):
    """Ctrl-C during step 5 (between its two optimiser steps) finishes step 5 and saves it;
    a second Ctrl-C stops at once and keeps the last checkpoint (step 3). Either resumes
    to the uninterrupted run's losses."""
    import geocells.train.trainer as trainer

    real_step = step_module.train_step
    calls = {"n": 0}

    def interrupting_step(model, encoders, optimizers, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] != 5:
            return real_step(model, encoders, optimizers, *args, **kwargs)
        first, later = optimizers["encoders"].step, optimizers["prototypes"].step

        def encoders_then_ctrl_c(*a, **k):
            result = first(*a, **k)
            os.kill(os.getpid(), signal.SIGINT)
            if second:
                os.kill(os.getpid(), signal.SIGINT)
            return result

        optimizers["encoders"].step = encoders_then_ctrl_c
        try:
            return real_step(model, encoders, optimizers, *args, **kwargs)
        finally:
            optimizers["encoders"].step, optimizers["prototypes"].step = first, later

    monkeypatch.setattr(trainer, "train_step", interrupting_step)
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    with pytest.raises(TrainingInterrupted) as stop:
        train_tiny(tiny_dataset, run)
    expected = "step-00000003.safetensors" if second else "step-00000005.safetensors"
    assert stop.value.checkpoint.name == expected
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored
    monkeypatch.setattr(trainer, "train_step", real_step)
    train_tiny(tiny_dataset, run, resume=True)
    assert _losses(run) == _losses(tiny_run)


def test_existing_run_needs_resume_or_overwrite(tiny_run, tiny_dataset):
    with pytest.raises(ValueError, match="--resume or --overwrite"):
        train_tiny(tiny_dataset, tiny_run)


def test_a_missing_dataset_is_refused_before_the_run_folder_gets_a_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        train_tiny(tmp_path / "no-such-dataset", tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert not (tmp_path / "run" / "run.json").exists()


def test_cli_rejects_unknown_keys_and_trains(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(tiny_dataset), "--config", "tiny", "--out", str(out), "optim.lrr=1"])
    assert code == 2
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err
    args = [
        "train",
        str(tiny_dataset),
        "--config",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        "train.max_steps=2",
    ]
    assert main(args) == 0
    assert load_model(out).card.experiment["train"]["max_steps"] == 2
    # --resume continues with the run's config.yaml (not the default preset) + overrides
    resume = ["train", str(tiny_dataset), "--out", str(out), "--resume", "--no-progress"]
    assert main([*resume, "train.max_steps=3"]) == 0
    card = load_model(out).card
    assert card.experiment["train"]["max_steps"] == 3 and card.model.backbone == "test_resnet"
    assert "max_steps: 3" in (out / "config.yaml").read_text()
    # ... and refuses a change of what is trained, naming the key
    assert main([*resume, "loss.alpha=3"]) == 2
    err = capsys.readouterr().err
    assert "differs from" in err and "loss.alpha" in err


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "geocells",
        "train",
        str(tiny_dataset),
        "--config",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        "train.max_steps=3",
        "train.checkpoint_every=100",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_metrics(out / "metrics.csv") if r["kind"] == "train"] == [
        "1",
        "2",
        "3",
    ]
    assert load_model(out).prototypes.cells.size > 0
