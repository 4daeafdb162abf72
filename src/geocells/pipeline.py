"""The main job: synthetic world -> training -> database -> calibration -> evaluation report.

``run(out, overrides)`` lays the pipeline out in one folder::

    out/dataset/   geocells synth --preset demo
    out/run/       geocells train out/dataset --config cpu-small
    out/db/        geocells index out/run, then geocells calibrate out/db --split val
    out/report/    geocells eval out/db --split test (metrics.json, report.html)
    out/demo.json  the overrides and how long each stage took

Every stage skips work that is already finished, so running the demo again resumes where
it stopped. Overrides are ``group.key=value`` with group ``synth``, ``train``, ``index``,
``calibrate`` or ``eval`` (e.g. ``synth.seed=3``, ``train.train.max_steps=200``,
``eval.compare_ivfpq=false``); a folder keeps the overrides it
was made with, and other overrides are refused there (use another ``out`` or
``overwrite``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from geocells.calibrate import stage as calibrate
from geocells.config import load_preset, resolve_config
from geocells.db import build
from geocells.eval import evaluate
from geocells.io import write_json
from geocells.outputs import OutputKind, claim_output
from geocells.synth import SynthConfig
from geocells.synth import run as synth_run
from geocells.train.config import experiment_config
from geocells.train.trainer import run as train_run

logger = logging.getLogger(__name__)

GROUPS = ("synth", "train", "index", "calibrate", "eval")
SYNTH_PRESET = "demo"
TRAIN_PRESET = "cpu-small"
STATE_FILE = "demo.json"
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


def _check_state(out: Path, overrides: list[str], overwrite: bool) -> dict:
    """Load ``demo.json`` and refuse a folder made with other overrides."""
    path = out / STATE_FILE
    claim_output(out, DEMO_OUTPUT, overwrite)  # --overwrite clears only the demo's own folders
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("overrides") != overrides:
            raise ValueError(
                f"{out} was made with overrides {state.get('overrides')}, not {overrides}; "
                "use another --out or --overwrite"
            )
        return state
    return {"overrides": overrides, "done": [], "seconds": {}}


def _save_state(out: Path, state: dict) -> None:
    write_json(out / STATE_FILE, state)


def _stage(state: dict, out: Path, name: str, output: Path, work) -> None:
    """Run ``work()`` unless ``demo.json`` marks ``name`` done and ``output`` exists."""
    if name in state["done"] and output.exists():
        logger.info("demo: %s already done, skipping", name)
        return
    logger.info("demo: %s ...", name)
    start = time.perf_counter()
    work()
    state["seconds"][name] = round(time.perf_counter() - start, 1)
    state["done"].append(name)
    _save_state(out, state)
    logger.info("demo: %s done in %.0f s", name, state["seconds"][name])


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
    eval_options = resolve_config(evaluate.EvalOptions, {}, groups["eval"])
    settings = [f"presets: synth={synth_preset} train={train_preset}", *overrides]
    state = _check_state(out, settings, overwrite)
    _save_state(out, state)
    dataset, run_dir, db, report = out / "dataset", out / "run", out / "db", out / "report"

    def train() -> None:
        resume = (run_dir / "checkpoints" / "last.safetensors").is_file()
        train_run(train_cfg, dataset, run_dir, resume=resume)

    _stage(state, out, "synth", dataset / "ground", lambda: synth_run(synth_cfg, dataset))
    _stage(state, out, "train", run_dir / "checkpoints", train)
    _stage(state, out, "index", db / "meta.json",
           lambda: build.run(run_dir, db, dataset=dataset, cfg=index_cfg))  # fmt: skip
    _stage(state, out, "calibrate", db / "calibration.csv",
           lambda: calibrate.run(db, dataset, split="val", cfg=calibrate_cfg))  # fmt: skip
    _stage(state, out, "eval", report / evaluate.REPORT_FILE,
           lambda: evaluate.run(db, dataset, "test", report, options=eval_options))  # fmt: skip
    return report
