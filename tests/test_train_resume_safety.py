"""``train --resume`` with another dataset, corrupt checkpoints and a full disk (issue 16,
case 9): one clear error naming the file, a fallback to the newest intact checkpoint, and
a run that always resumes."""

import errno
import re
import shutil
from pathlib import Path

import pytest

from fixtures_logs import captured_warnings
from fixtures_train import train_tiny
from geocells.models.weights import read_state_dict
from geocells.train import checkpoint
from geocells.train.checkpoint import CheckpointError
from geocells.train.metrics import read_metrics


def _losses(run: Path) -> dict[int, str]:
    rows = read_metrics(run / "metrics.csv")
    return {int(r["step"]): r["loss"] for r in rows if r["kind"] == "train"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of ``tiny_run`` (checkpoints at steps 3 and 6; last = 6)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def test_resume_refuses_another_dataset(run_copy, micro_dataset):
    before = _snapshot(run_copy)
    with pytest.raises(ValueError, match="another dataset") as info:
        train_tiny(micro_dataset, run_copy, resume=True)
    assert str(micro_dataset) in str(info.value) and "run.json" not in str(info.value)
    assert "geocells train" in str(info.value) and "--resume" in str(info.value)
    assert _snapshot(run_copy) == before


def test_a_corrupt_newest_checkpoint_falls_back_to_the_intact_one(
    run_copy, tiny_run, tiny_dataset, caplog
):
    folder = run_copy / "checkpoints"
    for name in ("step-00000006.safetensors", "last.safetensors"):
        (folder / name).write_bytes((folder / name).read_bytes()[:100])
    with captured_warnings(caplog, "geocells.train.checkpoint"):
        train_tiny(tiny_dataset, run_copy, resume=True)
    message = caplog.text
    assert "step-00000006.safetensors is unusable" in message
    assert "resuming from the newest intact checkpoint" in message
    assert "step-00000003.safetensors (step 3)" in message
    assert _losses(run_copy) == _losses(tiny_run)  # steps 4-6 again, identically


def test_no_readable_checkpoint_is_one_error_naming_each_file(run_copy, tiny_dataset):
    folder = run_copy / "checkpoints"
    for path in folder.glob("*.json"):
        path.write_text("{not json")
    before = _snapshot(run_copy)
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be read") as info:
        train_tiny(tiny_dataset, run_copy, resume=True)
    for stem in ("step-00000006", "step-00000003", "last"):
        assert f"{folder / stem}.json is unusable" in str(info.value)
    assert "--overwrite" in str(info.value)
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize("failing_save", [1, 2], ids=["first-checkpoint", "second-checkpoint"])
def test_a_full_disk_leaves_a_run_that_resumes(
    tiny_run, tiny_dataset, tmp_path, monkeypatch, failing_save
):
    real_save_file = checkpoint.save_file
    calls = {"n": 0}

    def disk_full_once(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == failing_save:
            Path(filename).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_once)
    run = tmp_path / "run"
    step = 3 * failing_save
    with pytest.raises(OSError, match=f"cannot write the checkpoint of step {step}") as info:
        train_tiny(tiny_dataset, run)
    assert info.value.errno == errno.ENOSPC and "--resume continues" in str(info.value)
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not any(name.startswith(f"step-{step:08d}") or ".tmp" in name for name in left)
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    train_tiny(tiny_dataset, run, resume=True)  # no "nothing to resume" / "use --resume" loop
    assert _losses(run) == _losses(tiny_run)
    assert (run / "checkpoints" / "step-00000006.json").is_file()


def test_a_corrupt_pretrained_safetensors_names_the_file(tmp_path):
    weights = tmp_path / "dinov2.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(ValueError, match=re.escape(f"cannot read pretrained weights {weights}")):
        read_state_dict(weights)
    assert weights.read_bytes().startswith(b"\x10\x00")
