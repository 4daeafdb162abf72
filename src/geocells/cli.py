"""``geocells <subcommand>``: the command-line front end.

Each subcommand lives in ``geocells.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``main(args) -> int``. Command modules import only light
things at module level, so ``geocells --help`` stays fast; heavy imports (torch, faiss)
happen inside ``main``. Bad input raises ``ValueError`` (or ``OSError`` for files) in
library code; here it becomes one readable line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from geocells import __version__

# Subcommand name -> module under geocells.commands (kept in pipeline order for --help).
COMMANDS: dict[str, str] = {
    "cells": "cells",
    "synth": "synth",
    "import": "import_",
    "dataset": "dataset",
    "train": "train",
    "refit": "refit",
    "index": "index",
    "calibrate": "calibrate",
    "locate": "locate",
    "serve": "serve",
    "eval": "eval",
    "demo": "demo",
    "bench": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="geocells",
        description="Locate ground-level photos in a continent-size region (S2 cells + aerial).",
    )
    parser.add_argument("--version", action="version", version=f"geocells {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"geocells.commands.{module_name}")
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geocells`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print(f"geocells {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        if args.verbose:
            raise
        print(f"geocells {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
