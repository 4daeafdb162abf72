"""Output folders: the owner marker, --overwrite that never deletes foreign files, the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fixtures_logs import captured_warnings
from geocells.outputs import (
    LOCK,
    MARKER,
    OutputError,
    OutputKind,
    claim_output,
    output_lock,
    read_marker,
    stage_output,
)

KIND = OutputKind("index", known=("meta.json", "cells.npy", "chunks"), signature=("meta.json",))


def snapshot(folder):
    """Every file under ``folder`` (relative path -> bytes), marker and lock left out."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MARKER, LOCK)
    }


def test_a_new_folder_is_marked_and_overwrite_clears_only_known_names(tmp_path):
    out = tmp_path / "db"
    assert claim_output(out, KIND) is False
    assert read_marker(out) == "index"
    (out / "meta.json").write_text("{}")
    (out / "chunks").mkdir()
    (out / "chunks" / "c.npz").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")  # the user's, inside a marked folder
    assert claim_output(out, KIND) is True  # kept without --overwrite
    assert claim_output(out, KIND, overwrite=True) is False
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_a_folder_geocells_did_not_write_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "meta.json").write_text("{}")  # a signature name, but next to foreign files
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    before = snapshot(out)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=rf"{out}.*holiday\.jpg.*did not write"):
            with stage_output(out, KIND, overwrite=overwrite):
                pass
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg", "meta.json"]  # no marker


def test_a_folder_without_a_signature_file_is_refused(tmp_path):
    out = tmp_path / "x"
    (out / "chunks").mkdir(parents=True)  # a known name, but nothing says geocells wrote it
    with pytest.raises(OutputError, match=rf"{out / 'chunks'}, which geocells did not write"):
        claim_output(out, KIND, overwrite=True)
    assert (out / "chunks").is_dir()


def test_an_old_unmarked_output_of_known_names_is_adopted(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "meta.json").write_text("{}")
    (out / ".cells.tmp.npy").write_bytes(b"left by a killed writer")
    assert claim_output(out, KIND, overwrite=True) is False
    assert read_marker(out) == "index" and snapshot(out) == {}


def test_another_stages_output_is_refused(tmp_path):
    out = tmp_path / "run"
    claim_output(out, OutputKind("train", ("config.yaml",), ("config.yaml",)))
    (out / "config.yaml").write_text("a: 1\n")
    with pytest.raises(OutputError, match=rf"{out} holds the output of geocells train"):
        claim_output(out, KIND, overwrite=True)
    assert (out / "config.yaml").read_text() == "a: 1\n"


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "db"
    with output_lock(out, KIND):
        holder = json.loads((out / LOCK).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(
            OutputError, match=rf"being written by geocells index \(PID {os.getpid()}"
        ):
            with output_lock(out, KIND):
                pass
    assert not (out / LOCK).exists()
    with output_lock(out, KIND):  # released: free again
        pass


def test_a_lock_held_by_another_process_names_it(tmp_path):
    out = tmp_path / "db"
    script = (
        "import sys, time; from geocells.outputs import output_lock, OutputKind\n"
        f"with output_lock({str(out)!r}, OutputKind('index', (), ())):\n"
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline().strip() == b"locked"
        with pytest.raises(OutputError, match=rf"PID {child.pid}\b"):
            with output_lock(out, KIND):
                pass
    finally:
        child.kill()
        child.wait()
    with output_lock(out, KIND):  # the kernel released the killed holder's lock
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "db"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "stage": "index", "host": "h"}))
    with captured_warnings(caplog, "geocells.outputs"):
        with output_lock(out, KIND):
            assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    assert f"stale lock of geocells index (PID {dead.pid}" in caplog.text


def test_an_unmarked_folder_of_marked_sub_outputs_is_adopted(tmp_path):
    demo = OutputKind("demo", known=("dataset", "run", "demo.json"), signature=("demo.json",))
    out = tmp_path / "demo"
    claim_output(out / "dataset", OutputKind("synth", ("world.json",), ("world.json",)))
    assert claim_output(out, demo) is True and read_marker(out) == "demo"
    (tmp_path / "other" / "run").mkdir(parents=True)  # a known name, but nobody's marker
    with pytest.raises(OutputError, match="run, which geocells did not write"):
        claim_output(tmp_path / "other", demo, overwrite=True)
    assert (tmp_path / "other" / "run").is_dir()


def test_stage_output_skips_finished_output_and_overwrite_redoes_it(tmp_path):
    """The one helper of every stage: finished output is kept and skipped; ``overwrite``
    clears the stage's files (``clear=False`` keeps them for an atomic replacement);
    ``finished`` raising (other settings) leaves the folder untouched."""
    out = tmp_path / "db"
    asked = []

    def finished(folder):
        asked.append(folder)
        if (folder / "meta.json").is_file() and (folder / "meta.json").read_text() != "{}\n":
            raise ValueError("built with other settings")
        return (folder / "meta.json").is_file()

    with stage_output(out, KIND, finished=finished) as folder:
        assert folder.skip is False and read_marker(out) == "index"
        folder.write_json("meta.json", {})
    with stage_output(out, KIND, finished=finished) as folder:
        assert folder.skip is True  # done: nothing to do
    assert asked == [out, out] and not (out / LOCK).exists()
    with stage_output(out, KIND, overwrite=True, finished=finished, clear=False) as folder:
        assert folder.skip is False and (out / "meta.json").is_file()  # kept until replaced
    with stage_output(out, KIND, overwrite=True, finished=finished) as folder:
        assert folder.skip is False and not (out / "meta.json").exists()
        (out / "meta.json").write_text('{"other": 1}')
    with pytest.raises(ValueError, match="other settings"):
        with stage_output(out, KIND, finished=finished):
            pass
    assert (out / "meta.json").read_text() == '{"other": 1}' and len(asked) == 3


def test_a_stage_writes_only_the_names_its_kind_knows(tmp_path):
    """The ``OutputFolder`` a stage gets writes atomically, and only names whose first part
    its ``OutputKind`` knows (so ``--overwrite`` clears all a stage wrote): a foreign or
    escaping name is refused, naming the stage and the name, and nothing is written."""
    out = tmp_path / "db"
    with stage_output(out, KIND) as folder:
        assert folder.write_json("meta.json", {"b": 1, "a": 2}) == out / "meta.json"
        assert (out / "meta.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
        with folder.file("chunks/chunk-0.npz") as temporary:
            assert temporary.parent == out / "chunks" and not temporary.name.startswith("chunk")
            temporary.write_bytes(b"x")
        assert (out / "chunks" / "chunk-0.npz").read_bytes() == b"x"
        for bad in ("notes.txt", "../db2/meta.json", "chunks/../../x", "/etc/passwd", ""):
            with pytest.raises(OutputError, match=r"index writes only .* not "):
                folder.write_text(bad, "no")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "chunks",
        "meta.json",
    ]
    assert not (tmp_path / "db2").exists()
