"""``geocells eval``: not built yet (see the open issues)."""

from __future__ import annotations

import argparse

HELP = "(not built yet) eval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments until the stage exists."""


def main(args: argparse.Namespace) -> int:
    """Say that the stage does not exist yet."""
    raise NotImplementedError("geocells eval is not built yet")
