"""geocells.eval: metrics, the compared methods and baselines, the HTML report, the demo.

``geocells.eval.run(options, db, dataset, out, split=...)`` is the ``eval`` stage
(``geocells.eval.evaluate.run``); ``geocells.pipeline.run(out, overrides)`` the demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(
    options: Any, db: str | Path, dataset: str | Path | None, out: str | Path, **kwargs: Any
) -> Path:
    """Evaluate ``db`` into ``out`` (see ``geocells.eval.evaluate.run``)."""
    from geocells.eval.evaluate import run as evaluate_run

    return evaluate_run(options, db, dataset, out, **kwargs)
