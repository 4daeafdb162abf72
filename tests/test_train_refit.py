"""Prototype refit: the maths on hand-made anchors, the stage on the tiny run."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geocells.config import ConfigError
from geocells.models.prototypes import PrototypeTable
from geocells.train.config import LossConfig, RefitConfig, experiment_config
from geocells.train.loss import MSParams
from geocells.train.refit import Anchors, mean_loss, refit_table, trainable_mask

PARAMS = MSParams(beta=10.0)
LOSS = LossConfig(beta=10.0)


def _problem(seed: int = 0, rows: int = 12, dim: int = 16):
    """A table of ``rows`` cells; rows 0-5 have ground + aerial anchors, 6-9 aerial only,
    10-11 none. Anchors scatter around a hidden direction per row."""
    generator = torch.Generator().manual_seed(seed)
    truth = F.normalize(torch.randn(rows, dim, generator=generator), dim=1)

    def around(row_ids: list[int], per_row: int) -> Anchors:
        ids = torch.tensor(row_ids).repeat_interleave(per_row)
        noise = 0.3 * torch.randn(len(ids), dim, generator=generator)
        return Anchors(F.normalize(truth[ids] + noise, dim=1), ids)

    cells = np.arange(1, rows + 1, dtype=np.uint64) * np.uint64(2**40)
    table = PrototypeTable(cells, level=15, dim=dim)
    torch.manual_seed(seed)
    torch.nn.init.normal_(table.embedding.weight)
    return table, around(list(range(6)), 5), around(list(range(10)), 3)


def _cfg(**changes) -> RefitConfig:
    return RefitConfig(**{"epochs": 40, "batch_size": 32, "lr": 0.05, "init": "keep", **changes})


def test_refit_lowers_the_prototype_loss():
    table, ground, aerial = _problem()
    cfg = _cfg()
    before = mean_loss(table, ground, aerial, cfg, PARAMS, LOSS)
    stats = refit_table(table, ground, aerial, cfg, PARAMS, LOSS, progress=False)
    after = mean_loss(table, ground, aerial, cfg, PARAMS, LOSS)
    assert after < 0.5 * before
    assert stats["loss_before"] == pytest.approx(before)
    assert stats["loss_after"] == pytest.approx(after)
    assert stats["rows_refitted"] == 10  # rows with anchors; 10 and 11 have none


FROZEN = {"all": [10, 11], "uncovered": [0, 1, 2, 3, 4, 5, 10, 11], "covered": [6, 7, 8, 9, 10, 11]}


@pytest.mark.parametrize("rows, frozen", list(FROZEN.items()))
def test_rows_outside_the_selection_keep_their_bytes(rows, frozen):
    table, ground, aerial = _problem()
    start = table.embedding.weight.detach().clone()
    refit_table(table, ground, aerial, _cfg(rows=rows), PARAMS, LOSS, progress=False)
    weight = table.embedding.weight.detach()
    assert torch.equal(weight[frozen], start[frozen])
    moved = sorted(set(range(12)) - set(frozen))
    assert not torch.allclose(F.normalize(weight[moved], dim=1), F.normalize(start[moved], dim=1))


def test_refit_is_deterministic_from_the_seed():
    results = []
    for _ in range(2):
        table, ground, aerial = _problem()
        refit_table(table, ground, aerial, _cfg(), PARAMS, LOSS, seed=3, progress=False)
        results.append(table.embedding.weight.detach().clone())
    assert torch.equal(results[0], results[1])
    assert trainable_mask(12, *_problem()[1:], "all").sum() == 10


def test_aerial_gap_reseeds_only_uncovered_rows():
    table, ground, aerial = _problem()
    start = F.normalize(table.embedding.weight.detach().clone(), dim=1)
    stats = refit_table(table, ground, aerial, _cfg(epochs=0, init="aerial_gap"), PARAMS, LOSS)
    weight = table.embedding.weight.detach()
    sums = torch.stack([aerial.vectors[aerial.rows == row].sum(0) for row in range(10)])
    aerial_mean = F.normalize(sums, dim=1)
    gap = (start[:6] - aerial_mean[:6]).mean(dim=0)
    expected = F.normalize(aerial_mean[6:10] + gap, dim=1)
    assert torch.allclose(weight[6:10], expected, atol=1e-5)
    assert torch.allclose(F.normalize(weight[:6], dim=1), start[:6], atol=1e-6)
    assert torch.equal(F.normalize(weight[10:], dim=1), start[10:])
    assert stats["rows_reseeded"] == 4 and stats["rows_refitted"] == 0
    assert stats["loss_before"] is None


def test_bad_refit_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"refit\.rows"):
        experiment_config("tiny", ["refit.rows=some"])
    with pytest.raises(ConfigError, match=r"refit\.init"):
        experiment_config("tiny", ["refit.init=zeros"])


def test_refit_stage_on_the_tiny_run(tiny_run, tmp_path, caplog):
    from geocells.models import load_model
    from geocells.models.geomodel import resolve_checkpoint
    from geocells.train.refit_stage import run

    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    last = folder / "checkpoints" / "last.safetensors"
    assert resolve_checkpoint(folder) == last
    target = run(RefitConfig(epochs=2, batch_size=64), folder, progress=False)
    info = json.loads((folder / "checkpoints" / "refit.json").read_text())
    assert info["aerial_anchors"] > 0 and info["loss_after"] <= info["loss_before"]
    assert resolve_checkpoint(folder) == target
    old, new = load_model(last), load_model(folder)
    for name, tensor in old.state_dict().items():  # encoders frozen, only the table moves
        if not name.startswith("prototypes."):
            assert torch.equal(tensor, new.state_dict()[name]), name
    assert not torch.equal(old.prototypes.embedding.weight, new.prototypes.embedding.weight)
    stamp = target.stat().st_mtime_ns
    run(RefitConfig(epochs=2, batch_size=64), folder, progress=False)
    assert target.stat().st_mtime_ns == stamp  # up to date: skipped
    shutil.copyfile(last, tmp_path / "copy")  # training went on: a new last.safetensors
    data = bytearray((tmp_path / "copy").read_bytes())
    data[-1] ^= 1
    last.unlink()
    last.write_bytes(bytes(data))
    # The handler goes on the logger itself: under xdist another test in the same worker
    # may have reconfigured logging (e.g. a disabled logger or one that does not propagate).
    geomodel_log = logging.getLogger("geocells.models.geomodel")
    geomodel_log.disabled = False
    geomodel_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="geocells.models.geomodel"):
            assert resolve_checkpoint(folder) == last
    finally:
        geomodel_log.removeHandler(caplog.handler)
    assert "made from another" in caplog.text


def test_refit_takes_the_run_folders_lock(tiny_run, tmp_path):
    from geocells.outputs import OutputError, output_lock
    from geocells.train.refit_stage import run
    from geocells.train.trainer import RUN_OUTPUT

    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    with output_lock(folder, RUN_OUTPUT):  # e.g. `geocells train --resume` writing it
        with pytest.raises(OutputError, match=r"being written by geocells train"):
            run(RefitConfig(epochs=1, batch_size=64), folder, progress=False)
    assert not (folder / "checkpoints" / "refit.json").exists()
    # a checkpoint in a folder of someone else's files: refit writes nothing there
    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    shutil.copyfile(
        folder / "checkpoints" / "last.safetensors", foreign / "checkpoints" / "last.safetensors"
    )
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt, which geocells did not write"):
        run(RefitConfig(epochs=1, batch_size=64), foreign, progress=False)
    assert sorted(p.name for p in (foreign / "checkpoints").iterdir()) == ["last.safetensors"]


def test_train_ends_with_the_refit_when_enabled(tiny_run, tiny_dataset, tmp_path):
    from fixtures_train import train_tiny

    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    assert not (folder / "checkpoints" / "refit.json").exists()
    train_tiny(tiny_dataset, folder, ["refit.enabled=true"], resume=True)  # finished: refit only
    info = json.loads((folder / "checkpoints" / "refit.json").read_text())
    assert info["settings"]["refit"]["init"] == "aerial_gap"
    assert info["rows_reseeded"] > 0
