"""Test configuration: fixtures shared across test files live in ``fixtures_*.py``."""

from fixtures_index import *  # noqa: F403
from fixtures_synth import *  # noqa: F403
from fixtures_train import *  # noqa: F403
