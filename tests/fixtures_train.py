"""Shared pytest fixtures owned by the train tests (session-scoped, built once per worker).

``tiny_run``: a run folder trained for a few steps with the ``tiny`` preset on
``tiny_dataset`` (from fixtures_synth); index and eval tests build databases from it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

__all__ = ["tiny_run", "train_tiny"]


def train_tiny(dataset: Path, out: Path, overrides: list[str] = (), resume=False) -> Path:
    """Run the tiny preset on ``dataset`` (no progress bar)."""
    from geocells.train.config import experiment_config
    from geocells.train.trainer import run

    cfg = experiment_config("tiny", list(overrides))
    return run(cfg, dataset, out, resume=resume, progress=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A run folder (config.yaml, checkpoints/last.*, metrics.csv) trained for 6 steps.

    Built once per test session, also under pytest-xdist (file lock); treat it as
    read-only.
    """
    base = tmp_path_factory.getbasetemp()
    session_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    shared = session_dir / "geocells-train"
    shared.mkdir(parents=True, exist_ok=True)
    run = shared / "tiny_run"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (run / "checkpoints" / "last.json").is_file():
                shutil.rmtree(run, ignore_errors=True)
                train_tiny(tiny_dataset, run)
            return run
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
