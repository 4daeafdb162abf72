"""Training checkpoints: safetensors for tensors, JSON for everything else.

``checkpoints/step-XXXXXXXX.safetensors``        model weights + config (``load_model``)
``checkpoints/step-XXXXXXXX.optim.safetensors``  optimiser tensors + RNG states
``checkpoints/step-XXXXXXXX.json``               step, epoch position, optimiser scalars
``checkpoints/last.*``                           hard links (or copies) of the newest
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from geocells.models.geomodel import GeoModel, write_model
from geocells.outputs import OutputFolder

logger = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".optim.safetensors", ".json")
CHECKPOINTS = "checkpoints"  # the folder of a run they live in


def _split_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict) -> dict:
    """Tensors of an optimiser state into ``tensors``; the JSON-able rest is returned."""
    state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for index, entry in state["state"].items():
        scalars[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[str(index)][key] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(name: str, meta: dict, tensors: dict) -> dict:
    """Inverse of ``_split_optimizer``: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict] = {int(i): dict(v) for i, v in meta["scalars"].items()}
    prefix = f"{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix) :].split("/", 1)
            state.setdefault(int(index), {})[field] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict, dict]:
    """(tensors, json) capturing the torch, numpy and Python RNG states."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    numpy_state = np.random.get_state()  # noqa: NPY002 - the global state is what we restore
    meta = {
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    return tensors, meta


def set_rng_state(tensors: dict, meta: dict) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def _link(run: OutputFolder, source: str, target: str) -> None:
    """``target`` becomes a hard link to ``source`` (a copy where links are impossible);
    both are names in the run folder."""
    with run.file(target) as temporary:
        temporary.unlink(missing_ok=True)
        try:
            os.link(run.path / source, temporary)
        except OSError:
            shutil.copyfile(run.path / source, temporary)


def save_checkpoint(
    run: OutputFolder,
    model: GeoModel,
    optimizers: dict[str, torch.optim.Optimizer],
    position: dict,
    keep: int,
) -> Path:
    """Write checkpoint files for ``position['step']`` into ``run``'s ``checkpoints/``,
    update ``last.*``, prune old ones; returns the weights file."""
    folder = run.path / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step-{position['step']:08d}"
    base = f"{CHECKPOINTS}/{stem}"  # the files' names in the run folder
    complete_before = (folder / f"{stem}.json").is_file()
    try:  # every file atomic, the JSON last: a step without its JSON is no checkpoint
        with run.file(f"{base}.safetensors") as temporary:
            write_model(model, temporary)
        tensors, rng_meta = rng_state()
        optim_meta = {name: _split_optimizer(name, o, tensors) for name, o in optimizers.items()}
        with run.file(f"{base}.optim.safetensors") as temporary:
            save_file(tensors, str(temporary))
        meta = {
            **position,
            "weights": f"{stem}.safetensors",  # the config is in its card (and RUN/config.yaml)
            "optimizers": optim_meta,
            "rng": rng_meta,
        }
        run.write_json(f"{base}.json", meta, indent=None)
    except OSError:  # e.g. a full disk: drop this step's pieces, the older checkpoints stay
        if not complete_before:
            for suffix in SUFFIXES:
                (folder / f"{stem}{suffix}").unlink(missing_ok=True)
        raise
    for suffix in SUFFIXES:
        _link(run, f"{base}{suffix}", f"{CHECKPOINTS}/last{suffix}")
    steps = sorted(folder.glob("step-*.json"))
    for old in steps[: max(0, len(steps) - max(1, keep))]:
        for suffix in SUFFIXES:
            (folder / f"{old.name[: -len('.json')]}{suffix}").unlink(missing_ok=True)
    logger.info("saved checkpoint %s", folder / f"{stem}.safetensors")
    return folder / f"{stem}.safetensors"


def checkpoint_stems(folder: Path) -> list[str]:
    """Stems to resume from, best first: ``step-*`` newest first, then ``last``.

    The step files are complete (their JSON is written last); ``last.*`` are links made
    one by one afterwards, so they are only the fallback of a folder without step files.
    """
    steps = sorted((p.name[: -len(".json")] for p in folder.glob("step-*.json")), reverse=True)
    return steps + (["last"] if (folder / "last.json").is_file() else [])


def load_checkpoint(
    folder: Path, model: GeoModel, optimizers: dict[str, torch.optim.Optimizer]
) -> dict | None:
    """Restore model, optimisers and RNG from the newest intact checkpoint in ``folder``;
    returns its position, or None when ``folder`` holds no checkpoint at all.

    A checkpoint that cannot be read (a corrupt file, a write cut short) is reported by
    name and the next older one is tried; when none can be read the error lists them all.
    """
    failures = []
    for stem in checkpoint_stems(folder):
        try:
            position = _load(folder, stem, model, optimizers)
        except CheckpointError as err:
            failures.append(str(err))
            continue
        if failures:
            logger.warning(
                "%s; resuming from the newest intact checkpoint, %s (step %d)",
                "; ".join(failures), folder / f"{stem}.safetensors", position["step"],
            )  # fmt: skip
        return position
    if failures:
        raise CheckpointError(
            f"no checkpoint in {folder} can be read:\n  " + "\n  ".join(failures)
            + "\nstart over with --overwrite (or restore the files)"
        )  # fmt: skip
    return None


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def _load(folder: Path, stem: str, model: GeoModel, optimizers: dict) -> dict:
    """Restore one checkpoint (``stem``.*); ``CheckpointError`` naming the bad file."""
    from safetensors import SafetensorError

    meta_path = folder / f"{stem}.json"
    weights_path = folder / f"{stem}.safetensors"
    optim_path = folder / f"{stem}.optim.safetensors"
    current = meta_path
    try:
        meta = json.loads(meta_path.read_text())
        current = weights_path
        weights = load_file(str(weights_path))
        missing = sorted(set(model.state_dict()) - set(weights))
        if missing:
            raise ValueError(f"lacks {missing[:5]}")
        model.load_state_dict(weights, strict=True)
        current = optim_path
        tensors = load_file(str(optim_path))
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(_join_optimizer(name, meta["optimizers"][name], tensors))
        set_rng_state(tensors, meta["rng"])
        return {k: meta[k] for k in ("step", "epoch", "batch", "elapsed_s")}
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        reason = " ".join(str(err).split())[:300]
        raise CheckpointError(f"checkpoint {current} is unusable ({reason})") from None
