"""Shared pytest fixtures owned by the synth tests (session-scoped, built once per run).

``tiny_dataset`` is built once for the whole test session, even under pytest-xdist: the
first worker to take a file lock renders it, the others wait and reuse it.
"""

import fcntl
import os
from pathlib import Path

import pytest

__all__ = ["tiny_dataset"]


def build_tiny_dataset(root: Path) -> Path:
    """Render the ``tiny`` synthetic preset into ``root / "tiny"`` (resumes if present)."""
    from geocells.config import load_preset, resolve_config
    from geocells.synth import SynthConfig, run

    cfg = resolve_config(SynthConfig, load_preset("tiny", "synth"))
    return run(cfg, root / "tiny")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Path of a tiny synthetic dataset (region, world.json, ground manifest+JPEGs, aerial COG).

    Treat it as read-only: it is shared by every test of the session.
    """
    base = tmp_path_factory.getbasetemp()
    # Under xdist every worker has its own basetemp inside the session's folder.
    session_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    shared = session_dir / "geocells-synth"
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return build_tiny_dataset(shared)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
