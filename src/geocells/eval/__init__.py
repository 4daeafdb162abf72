"""geocells.eval: metrics, the compared methods and baselines, the HTML report, the demo.

``geocells.eval.run(db, dataset, split, out)`` is the ``eval`` stage
(``geocells.eval.evaluate.run``); ``geocells.pipeline.run(out, overrides)`` the demo.
"""

from __future__ import annotations

from pathlib import Path


def run(db: str | Path, dataset: str | Path | None, split: str = "test", out: str | Path = "report",
        **kwargs) -> Path:  # fmt: skip
    """Evaluate ``db`` on ``split`` into ``out`` (see ``geocells.eval.evaluate.run``)."""
    from geocells.eval.evaluate import run as evaluate_run

    return evaluate_run(db, dataset, split, out, **kwargs)
