"""A full disk (ENOSPC) names the file and the folder it could not write, for every stage
that writes (issue 22, item 12), and training leaves no orphan piece of a checkpoint."""

import errno
import os
import re
import shutil
from pathlib import Path

import pytest

from fixtures_train import train_tiny
from geocells.cli import main
from geocells.io import atomic_write
from geocells.train import checkpoint


def _fill_disk_under(folder: Path, monkeypatch) -> None:
    """Every atomic write into ``folder`` fails as a full disk does (the rename is the
    last step of each; the writes before it succeed on a disk that is nearly full)."""
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if str(Path(target).resolve()).startswith(str(folder.resolve())):
            raise OSError(errno.ENOSPC, "No space left on device", str(source), str(target))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _named(err: str, folder: Path) -> bool:
    pattern = rf"\[Errno 28\] cannot write [^ /]+ in {re.escape(str(folder))}\S*: No space left"
    return re.search(pattern, err) is not None


def test_atomic_write_names_the_file_and_its_folder(tmp_path):
    for failure in (
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ):
        with pytest.raises(OSError) as info, atomic_write(tmp_path / "sub" / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise failure
        assert info.value.errno == errno.ENOSPC
        assert str(info.value).startswith(f"[Errno 28] cannot write x.bin in {tmp_path / 'sub'}")
        assert list((tmp_path / "sub").iterdir()) == []  # no temporary left
    with pytest.raises(ValueError, match="not a disk"), atomic_write(tmp_path / "y") as tmp:
        raise ValueError("not a disk problem: left alone")


@pytest.mark.parametrize("command", ["locate", "index", "calibrate", "eval"])
def test_every_stage_names_what_it_could_not_write(
    command, micro_db, micro_dataset, tmp_path, monkeypatch, capsys
):
    full = tmp_path / "full"
    full.mkdir()
    image = str(micro_dataset / "ground" / "images" / "000.jpg")
    db = micro_db
    if command == "calibrate":
        db = shutil.copytree(micro_db, full / "db")
    argv = {
        "locate": ["locate", str(db), image, "--out", str(full / "out.json"), "--no-progress"],
        "index": [
            "index",
            str(micro_db.parent / "run"),
            "--out",
            str(full / "db"),
            "--dataset",
            str(micro_dataset),
            "--no-progress",
        ],
        "calibrate": ["calibrate", str(db), "--dataset", str(micro_dataset)],
        "eval": [
            "eval",
            str(db),
            "--dataset",
            str(micro_dataset),
            "--out",
            str(full / "ev"),
            "--no-baselines",
            "--no-interactive-map",
        ],
    }[command]
    _fill_disk_under(full, monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert _named(err, full), err
    assert "unexpected" not in err and "Traceback" not in err


def test_a_full_disk_during_a_checkpoint_leaves_no_orphan_and_names_the_file(
    tiny_dataset, tmp_path, monkeypatch
):
    from safetensors import SafetensorError

    real_save_file = checkpoint.save_file

    def disk_full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"part of a file")
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")  # fmt: skip

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    run = tmp_path / "run"
    with pytest.raises(OSError) as info:
        train_tiny(tiny_dataset, run)
    folder = run / "checkpoints"
    assert info.value.errno == errno.ENOSPC
    assert f"cannot write step-00000003.optim.safetensors in {folder}" in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == []  # no step-00000003.safetensors
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    train_tiny(tiny_dataset, run, resume=True)
    assert (folder / "step-00000006.json").is_file()
