"""Test configuration: fixtures shared across test files live in ``fixtures_*.py``."""

import os

# Two xdist workers share two cores: spinning OpenMP threads (torch, faiss) would starve
# each other, so idle threads sleep instead. Must be set before torch/faiss load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fixtures_index import *  # noqa: F403
from fixtures_serve import *  # noqa: F403
from fixtures_synth import *  # noqa: F403
from fixtures_train import *  # noqa: F403
