"""Option checks shared by every subcommand: sizes, counts, S2 levels, split names.

Each is an argparse ``type=``, so a bad value stops the command before anything is
loaded, with argparse's usual ``argument --batch-size: ...`` line (exit 2). The stage
dataclasses repeat the same limits (``geocells.config.require_at_least``) for the Python
API and for ``key=value`` overrides.
"""

from __future__ import annotations

import argparse

SPLIT_NAMES = ("train", "val", "test")  # geocells.data.manifest.SPLITS (not imported: speed)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes and counts: --batch-size, --top-k, --queue-size...)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (where 0 means "default" or "all": --threads, --max-queries)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cell_level(text: str) -> int:
    """An S2 level, 0..30."""
    value = _integer(text)
    if not 0 <= value <= 30:
        raise argparse.ArgumentTypeError(f"S2 levels are 0..30, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"ports are 1..65535, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (--max-upload-mb)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def split_name(text: str) -> str:
    """One of the manifest's splits: train, val, test."""
    if text not in SPLIT_NAMES:
        raise argparse.ArgumentTypeError(f"unknown split {text!r}; valid: {', '.join(SPLIT_NAMES)}")
    return text


DEVICE_HELP = "where the model runs: auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N (``geocells.models.device``; checked again when resolved)."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; valid: auto, cpu, cuda, cuda:N")
    return text
