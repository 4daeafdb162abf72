"""Where a training run stands (``TrainState``) and Ctrl-C as a flag (``StopRequest``).

A SIGINT handler that raises can land between the encoder and the prototype optimiser
steps, and a checkpoint written then holds half a step. ``StopRequest`` only records the
request; the loop looks at it between steps, so a checkpoint always holds whole steps. A
second Ctrl-C raises ``KeyboardInterrupt`` at once (nothing is saved then).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The loop's position: what a checkpoint records besides tensors."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch: int = 0  # batches of ``epoch`` done
    elapsed_s: float = 0.0  # training time so far (the max_minutes budget counts it)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """From a checkpoint's JSON (other keys there are ignored)."""
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"checkpoint position lacks {missing}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def loader_generator(seed: int, epoch: int):
    """The DataLoader's own ``torch.Generator`` for one epoch (its worker seeds), so that
    starting a loader mid-epoch on resume leaves the global torch RNG untouched."""
    import torch

    return torch.Generator().manual_seed(seed * 1_000_033 + epoch)


class StopRequest:
    """``with StopRequest() as stop: ... if stop.requested: break`` — Ctrl-C as a flag.

    Outside the main thread (where Python delivers signals) it only holds the flag.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: stopping after this step (press again to stop at once)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
