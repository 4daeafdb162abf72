"""The main job: synthetic world -> training -> database -> calibration -> evaluation report.

``run(out, overrides)`` lays the pipeline out in one folder::

    out/dataset/   geocells synth --preset demo
    out/run/       geocells train out/dataset --config cpu-pretrained
    out/db/        geocells index out/run, then geocells calibrate out/db --split val
    out/report/    geocells eval out/db --split test ground_retrieval=false (metrics.json,
                   report.html; the ground-retrieval baseline, ~4 min on 2 cores with the
                   pretrained encoder, is on with ``eval.ground_retrieval=true``)
    out/demo.json  the overrides and how long each stage took

Every stage skips work that is already finished, so running the demo again resumes where
it stopped. Overrides are ``group.key=value`` with group ``synth``, ``train``, ``index``,
``calibrate`` or ``eval`` (e.g. ``synth.seed=3``, ``train.train.max_steps=200``,
``eval.compare_ivfpq=false``); a folder keeps the overrides it
was made with, and other overrides are refused there (use another ``out`` or
``overwrite``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from geocells.calibrate import stage as calibrate
from geocells.config import load_preset, resolve_config
from geocells.data.dataset import Dataset
from geocells.db import build
from geocells.db.store import Database
from geocells.eval import evaluate
from geocells.io import read_json
from geocells.outputs import OutputFolder, OutputKind, stage_output
from geocells.synth import SynthConfig
from geocells.synth import export as synth
from geocells.train import trainer as train
from geocells.train.config import experiment_config

logger = logging.getLogger(__name__)

GROUPS = ("synth", "train", "index", "calibrate", "eval")
SYNTH_PRESET = "demo"
TRAIN_PRESET = "cpu-pretrained"
# What the demo changes in the eval defaults (overrides win): embedding every training
# panorama for the ground-retrieval baseline would add ~4 of the demo's 30 minutes.
EVAL_DEFAULTS = {"ground_retrieval": False}
STATE_FILE = "demo.json"
# The stages' output folders in ``out`` (calibrate writes into the database).
FOLDERS = {"synth": "dataset", "train": "run", "index": "db", "calibrate": "db", "eval": "report"}
DEMO_OUTPUT = OutputKind(
    stage="demo", known=("dataset", "run", "db", "report", STATE_FILE), signature=(STATE_FILE,)
)


def split_overrides(overrides: Sequence[str]) -> dict[str, list[str]]:
    """``["synth.seed=3", "train.optim.lr=1e-3"]`` -> ``{"synth": ["seed=3"], ...}``."""
    groups: dict[str, list[str]] = {group: [] for group in GROUPS}
    for item in overrides:
        group, _, rest = item.partition(".")
        if group not in groups or "=" not in rest:
            raise ValueError(
                f"override {item!r} must look like GROUP.key=value with GROUP one of "
                f"{', '.join(GROUPS)}"
            )
        groups[group].append(rest)
    return groups


def _overrides_check(settings: list[str]):
    """``stage_output``'s check of the demo folder: made with these settings, or refused.
    A demo is never "finished" as a whole: its stages skip what they have done."""

    def check(out: Path) -> bool:
        state = DemoState.load(out)
        if state is not None and state.overrides != settings:
            raise ValueError(
                f"{out} was made with overrides {state.overrides}, not {settings}; "
                "use another --out or --overwrite"
            )
        return False

    return check


@dataclass
class DemoState:
    """``demo.json``: the settings, the stages done (with their output) and their seconds."""

    overrides: list[str]
    done: dict[str, str] = field(default_factory=dict)  # stage -> its output folder
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> DemoState | None:
        """The state in ``out`` (None when there is none; ``done`` as a list: older demo)."""
        path = out / STATE_FILE
        if not path.is_file():
            return None
        data = read_json(path)
        done = data["done"]
        if isinstance(done, list):  # an older demo.json: names only, folders by convention
            done = {name: str(out / FOLDERS[name]) for name in done}
        return cls(list(data["overrides"]), done, dict(data["seconds"]))

    def save(self, out: OutputFolder) -> Path:
        """Write ``demo.json`` into the demo's folder: the one writer of the demo's state."""
        return out.write_json(STATE_FILE, asdict(self))

    def timed(
        self, out: OutputFolder, name: str, stage: Callable[..., Path], *args, **kwargs
    ) -> Path:
        """``stage(*args, **kwargs)`` unless ``demo.json`` marks ``name`` done and its output
        exists; records the time taken. Returns the stage's output folder."""
        folder = self.done.get(name)
        if folder is not None and Path(folder).exists():
            logger.info("demo: %s already done, skipping", name)
            return Path(folder)
        logger.info("demo: %s ...", name)
        start = time.perf_counter()
        result = Path(stage(*args, **kwargs))
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.done[name] = str(result)
        self.save(out)
        logger.info("demo: %s done in %.0f s", name, self.seconds[name])
        return result


def run(
    out: str | Path,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    synth_preset: str = SYNTH_PRESET,
    train_preset: str = TRAIN_PRESET,
) -> Path:
    """Run (or resume) the whole pipeline in ``out``; returns the report folder."""
    out = Path(out).resolve()
    groups = split_overrides(overrides)
    # Resolve every config first, so a bad override fails before any work is done.
    synth_cfg = resolve_config(SynthConfig, load_preset(synth_preset, "synth"), groups["synth"])
    train_cfg = experiment_config(train_preset, groups["train"])
    index_cfg = resolve_config(build.IndexConfig, {}, groups["index"])
    calibrate_cfg = resolve_config(calibrate.CalibrateConfig, {}, groups["calibrate"])
    eval_options = resolve_config(evaluate.EvalOptions, EVAL_DEFAULTS, groups["eval"])
    settings = [f"presets: synth={synth_preset} train={train_preset}", *overrides]
    check = _overrides_check(settings)
    with stage_output(out, DEMO_OUTPUT, overwrite=overwrite, finished=check) as folder:
        state = DemoState.load(out) or DemoState(settings)
        state.save(folder)
        resume = (out / FOLDERS["train"] / "checkpoints" / "last.safetensors").is_file()
        timed = partial(state.timed, folder)
        # Each stage takes folders from the CLI; here the dataset and the database are
        # opened once and the handles passed down (calibrate updates the database's meta
        # in place, eval reads κ from it and reuses the model calibrate loaded).
        dataset = Dataset.open(timed("synth", synth.run, synth_cfg, out / FOLDERS["synth"]))
        run_dir = timed("train", train.run, train_cfg, dataset, out / FOLDERS["train"],
                        resume=resume)  # fmt: skip
        db = timed("index", build.run, index_cfg, run_dir, out / FOLDERS["index"], dataset=dataset)
        database = Database.open(db)
        timed("calibrate", calibrate.run, calibrate_cfg, database, dataset, split="val")
        return timed("eval", evaluate.run, eval_options, database, dataset, out / FOLDERS["eval"],
                     split="test")  # fmt: skip
