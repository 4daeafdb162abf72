"""Resume determinism (issue 22, item 13): a run killed after its step-3 checkpoint and
resumed holds exactly the bytes of the uninterrupted run at step 6, RNG states included,
and continuing both to step 9 gives bit-identical weights."""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from fixtures_train import train_tiny

DROPOUT = ["model.dropout=0.3"]  # a draw from the global torch RNG in every step


def _tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    stem = run / "checkpoints" / f"step-{step:08d}"
    tensors = load_file(f"{stem}.safetensors")
    optim = load_file(f"{stem}.optim.safetensors")
    return {**tensors, **{f"optim:{key}": value for key, value in optim.items()}}


def _assert_identical(left: dict, right: dict) -> None:
    assert sorted(left) == sorted(right)
    differ = [key for key in left if not torch.equal(left[key], right[key])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:5]}"


def test_a_resumed_run_continues_bit_identically(tiny_dataset, tmp_path):
    straight = train_tiny(tiny_dataset, tmp_path / "straight", DROPOUT)
    killed = shutil.copytree(straight, tmp_path / "killed")
    for path in (killed / "checkpoints").glob("step-00000006.*"):
        path.unlink()  # kill -9 after step 4: step 3 is the newest checkpoint (mid-epoch)
    train_tiny(tiny_dataset, killed, DROPOUT, resume=True)
    _assert_identical(_tensors(straight, 6), _tensors(killed, 6))
    for run in (straight, killed):
        train_tiny(tiny_dataset, run, [*DROPOUT, "train.max_steps=9"], resume=True)
    _assert_identical(_tensors(straight, 9), _tensors(killed, 9))
    assert not torch.equal(
        _tensors(straight, 6)["optim:rng/torch"], _tensors(straight, 9)["optim:rng/torch"]
    )
