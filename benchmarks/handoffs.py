"""Back-and-forth between layers while one thing is followed through a tiny run (issue 21).

Two things are followed, each over a real run at tiny size:

- ``config``: the training config, through ``geocells train DATASET --config tiny --out
  RUN`` (then ``--resume`` on that run), i.e. ``commands/train.py`` down to the trainer;
- ``folder``: the demo's output folder, through ``pipeline.run(OUT)`` from an empty folder
  (tiny synth and train presets).

Counting (docs/architecture.md, "Hand-offs"): every Python function of a ``geocells``
module has the layer of its top-level package in pyproject's import-linter ``layers``
(``geocells.config`` -> ``config``, ``geocells.train.trainer`` -> ``db | train``). A
*hand-off* is a call from a geocells function to a geocells function of a lower layer
whose arguments hold the followed thing; its return is one return to a higher layer. The
caller is the nearest geocells frame on the stack (``functools.partial``, ``contextlib``
and lambdas in between do not hide it). Each (caller function, callee function) pair
counts once, however often a loop repeats it: the number a reader following the thing
through the code meets.

The followed thing: for ``config``, an experiment config or one of its group dataclasses,
the ``ExperimentConfig`` class (a schema being resolved), a dict of its groups, or a
``Path`` named ``config.yaml``; for ``folder``, a ``str``/``Path`` at or under the output
folder (``--depth 1``: the folder and what it holds directly, i.e. the stage folders and
``demo.json``, not the files inside the stages' folders).

Run: ``python benchmarks/handoffs.py --path config --dataset DATASET`` or ``--path
folder`` (both print the pairs, then the count); ``--layers`` takes another pyproject.
The layers of this checkout are used, so two versions of the code are counted alike
(``PYTHONPATH=OTHER/src python benchmarks/handoffs.py ...`` counts another checkout).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG_CLASSES = (
    ("geocells.train.config", "ExperimentConfig"),
    ("geocells.train.config", "DataConfig"),
    ("geocells.train.config", "LossConfig"),
    ("geocells.train.config", "OptimConfig"),
    ("geocells.train.config", "TrainConfig"),
    ("geocells.train.config", "RefitConfig"),
    ("geocells.train.config", "CacheConfig"),
    ("geocells.models.config", "ModelConfig"),
)


def read_layers(pyproject: Path) -> dict[str, int]:
    """Top-level geocells package name -> layer index (0 = highest) from import-linter."""
    data = tomllib.loads(pyproject.read_text())
    contracts = data["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    index: dict[str, int] = {}
    for position, row in enumerate(layers):
        for name in row.split("|"):
            index[name.strip().strip("()")] = position
    return index


class HandoffCounter:
    """A ``sys.setprofile`` hook recording the distinct hand-offs of the followed thing."""

    def __init__(self, layers: dict[str, int], follows: Callable[[Any], bool]) -> None:
        self.layers, self.follows = layers, follows
        self.code_layer: dict[Any, int] = {}
        self.pairs: dict[tuple[str, str], int] = {}

    def layer(self, frame) -> int:
        """The frame's layer index, or -1 outside geocells."""
        code = frame.f_code
        found = self.code_layer.get(code)
        if found is None:
            module = frame.f_globals.get("__name__", "")
            found = -1
            if module == "geocells" or module.startswith("geocells."):
                top = module.split(".")[1] if "." in module else "cli"
                found = self.layers.get(top, self.layers.get("cli", 0))
            self.code_layer[code] = found
        return found

    def __call__(self, frame, event: str, arg: Any) -> None:
        if event != "call":
            return
        layer = self.layer(frame)
        if layer < 0:
            return
        caller = frame.f_back
        while caller is not None and self.layer(caller) < 0:
            caller = caller.f_back
        if caller is None or self.layer(caller) >= layer:
            return
        if any(self.follows(value) for value in _arguments(frame)):
            key = (_name(caller), _name(frame))
            self.pairs[key] = self.pairs.get(key, 0) + 1

    def trace(self, function: Callable[[], Any]) -> Any:
        """Run ``function()`` under the hook."""
        sys.setprofile(self)
        try:
            return function()
        finally:
            sys.setprofile(None)


def _name(frame) -> str:
    return f"{frame.f_globals.get('__name__')}.{frame.f_code.co_qualname}"


def _arguments(frame) -> list[Any]:
    """The values a call received (``*args`` and ``**kwargs`` unpacked one level)."""
    code = frame.f_code
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    values: list[Any] = []
    for name in code.co_varnames[:count]:
        value = frame.f_locals.get(name)
        if isinstance(value, tuple) and name != "self":
            values.extend(value)
        elif isinstance(value, dict) and not _groups_dict(value):
            values.extend(value.values())
        else:
            values.append(value)
    return values


GROUPS = ("model", "data", "loss", "optim", "train", "refit", "cache")


def _groups_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(key in GROUPS for key in value)


def config_follower() -> Callable[[Any], bool]:
    """True for the training config in any of its forms."""
    classes = []
    for module, name in CONFIG_CLASSES:
        found = getattr(importlib.import_module(module), name, None)
        if found is not None:
            classes.append(found)
    classes_t = tuple(classes)
    experiment = classes[0]

    def follows(value: Any) -> bool:
        if value is experiment:
            return True
        if dataclasses.is_dataclass(value) and isinstance(value, classes_t):
            return True
        if isinstance(value, Path) and value.name == "config.yaml":
            return True
        return _groups_dict(value)

    return follows


def folder_follower(out: Path, depth: int | None = None) -> Callable[[Any], bool]:
    """True for a path at or under ``out`` (at most ``depth`` levels below it, if given)."""
    prefix = str(out)

    def follows(value: Any) -> bool:
        if not isinstance(value, Path | str):
            return False
        text = str(value)
        if text == prefix:
            return True
        if not text.startswith(prefix + "/"):
            return False
        return depth is None or text[len(prefix) + 1 :].count("/") < depth

    return follows


def count_config(dataset: Path, work: Path, layers: dict[str, int]) -> dict[str, HandoffCounter]:
    """Follow the config through ``geocells train`` (fresh) and ``--resume``."""
    from geocells.cli import main

    run = work / "run"
    base = ["train", str(dataset), "--out", str(run), "--no-progress"]
    runs = {
        "train": [*base, "--config", "tiny", "train.max_steps=2"],
        "train --resume": [*base, "--resume", "train.max_steps=3"],
    }
    counters = {}
    for label, argv in runs.items():
        counter = HandoffCounter(layers, config_follower())
        code = counter.trace(lambda argv=argv: main(argv))
        if code != 0:
            raise SystemExit(f"geocells {' '.join(argv)} failed ({code})")
        counters[label] = counter
    return counters


def count_folder(
    work: Path, layers: dict[str, int], depth: int | None
) -> dict[str, HandoffCounter]:
    """Follow the output folder through the demo pipeline from an empty folder."""
    from geocells import pipeline

    out = (work / "demo").resolve()
    counter = HandoffCounter(layers, folder_follower(out, depth))
    counter.trace(lambda: pipeline.run(out, synth_preset="tiny", train_preset="tiny"))
    label = "pipeline.run" + (f" (paths at most {depth} below OUT)" if depth else "")
    return {label: counter}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", choices=("config", "folder"), required=True)
    parser.add_argument("--dataset", type=Path, help="dataset for --path config")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--depth", type=int, help="--path folder: follow OUT and paths at most this deep in it"
    )
    parser.add_argument("--layers", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--quiet", action="store_true", help="print the counts only")
    args = parser.parse_args()
    layers = read_layers(args.layers)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        if args.path == "config":
            if args.dataset is None:
                parser.error("--path config needs --dataset")
            counters = count_config(args.dataset.resolve(), work, layers)
        else:
            counters = count_folder(work, layers, args.depth)
    import geocells

    print(f"geocells from {Path(geocells.__file__).parent}")
    for label, counter in counters.items():
        if not args.quiet:
            for (caller, callee), calls in sorted(counter.pairs.items()):
                print(f"  {caller} -> {callee}  ({calls} calls)")
        print(f"{label}: {len(counter.pairs)} returns to a higher layer")


if __name__ == "__main__":
    main()
