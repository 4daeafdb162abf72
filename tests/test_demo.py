"""The demo's override handling and its resume bookkeeping (the stages run in the e2e test)."""

import json

import pytest

from geocells import pipeline as demo


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
    state = demo._check_state(tmp_path, ["synth.seed=1"], overwrite=False)
    demo._save_state(tmp_path, state)
    assert demo._check_state(tmp_path, ["synth.seed=1"], overwrite=False)["overrides"] == [
        "synth.seed=1"
    ]
    with pytest.raises(ValueError, match="--overwrite"):
        demo._check_state(tmp_path, ["synth.seed=2"], overwrite=False)
    (tmp_path / "db").mkdir()
    fresh = demo._check_state(tmp_path, ["synth.seed=2"], overwrite=True)
    assert fresh == {"overrides": ["synth.seed=2"], "done": [], "seconds": {}}
    assert not (tmp_path / "db").exists()


def test_stage_skips_finished_work_and_records_time(tmp_path):
    state = {"overrides": [], "done": [], "seconds": {}}
    calls = []
    output = tmp_path / "output"
    demo._stage(state, tmp_path, "one", output, lambda: calls.append("one") or output.mkdir())
    demo._stage(state, tmp_path, "one", output, lambda: calls.append("again"))
    assert calls == ["one"]
    saved = json.loads((tmp_path / demo.STATE_FILE).read_text())
    assert saved["done"] == ["one"] and set(saved["seconds"]) == {"one"}
    output.rmdir()  # its output is gone: the stage runs again
    demo._stage(state, tmp_path, "one", output, lambda: calls.append("rerun"))
    assert calls == ["one", "rerun"]
