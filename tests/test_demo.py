"""The demo's override handling and its resume bookkeeping (the stages run in the e2e test)."""

import json
from dataclasses import asdict

import pytest

from geocells import pipeline as demo
from geocells.io import write_json
from geocells.outputs import OutputFolder, stage_output


def test_split_overrides_by_group():
    groups = demo.split_overrides(
        ["synth.seed=3", "train.optim.lr=1e-3", "synth.size_km=4", "eval.top_k=5"]
    )
    assert groups == {
        "synth": ["seed=3", "size_km=4"], "train": ["optim.lr=1e-3"], "index": [],
        "calibrate": [], "eval": ["top_k=5"],
    }  # fmt: skip


@pytest.mark.parametrize("bad", ["seed=3", "model.dim=3", "synth.seed"])
def test_split_overrides_rejects_ungrouped(bad):
    with pytest.raises(ValueError, match=r"GROUP\.key=value"):
        demo.split_overrides([bad])


def test_state_refuses_other_overrides(tmp_path):
    def claim(settings, overwrite=False):
        check = demo._overrides_check(settings)
        with stage_output(tmp_path, demo.DEMO_OUTPUT, overwrite=overwrite, finished=check):
            pass

    claim(["synth.seed=1"])
    write_json(tmp_path / demo.STATE_FILE, asdict(demo.DemoState(["synth.seed=1"])))
    claim(["synth.seed=1"])  # the same settings: accepted
    with pytest.raises(ValueError, match="--overwrite"):
        claim(["synth.seed=2"])
    (tmp_path / "db").mkdir()
    claim(["synth.seed=2"], overwrite=True)
    assert demo.DemoState.load(tmp_path) is None and not (tmp_path / "db").exists()


def test_an_older_demo_state_reads(tmp_path):
    """demo.json listed done stages by name before it recorded their output folders."""
    old = {"overrides": ["x"], "done": ["synth", "calibrate"], "seconds": {"synth": 3.0}}
    write_json(tmp_path / demo.STATE_FILE, old)
    state = demo.DemoState.load(tmp_path)
    assert state.done == {"synth": str(tmp_path / "dataset"), "calibrate": str(tmp_path / "db")}


def test_stage_skips_finished_work_and_records_time(tmp_path):
    state = demo.DemoState([])
    calls = []
    output = tmp_path / "output"

    def stage(name, *, flag):
        calls.append((name, flag))
        output.mkdir(exist_ok=True)
        return output

    folder = OutputFolder(tmp_path, demo.DEMO_OUTPUT)
    assert state.timed(folder, "one", stage, "one", flag=1) == output
    assert state.timed(folder, "one", stage, "again", flag=1) == output
    assert calls == [("one", 1)]
    saved = json.loads((tmp_path / demo.STATE_FILE).read_text())
    assert saved["done"] == {"one": str(output)} and set(saved["seconds"]) == {"one"}
    output.rmdir()  # its output is gone: the stage runs again
    state.timed(folder, "one", stage, "rerun", flag=2)
    assert calls == [("one", 1), ("rerun", 2)]
