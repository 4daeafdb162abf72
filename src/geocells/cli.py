"""``geocells <subcommand>``: the command-line front end.

Each subcommand lives in ``geocells.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``main(args) -> int``. Command modules import only light
things at module level, so ``geocells --help`` stays fast; heavy imports (torch, faiss)
happen inside ``main``. Bad input raises ``ValueError`` (or ``OSError`` for files) in
library code, and a bad command line (argparse) raises ``UsageError``; here either becomes
one readable line and exit code 2. Any other exception (a
bug, or a case nobody foresaw) also becomes one line, naming the command, the exception
and the inputs it was given; ``-v`` (before or after the subcommand) prints the traceback
before that line, and the exit status stays the same (2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
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
    "export": "export",
    "locate": "locate",
    "serve": "serve",
    "eval": "eval",
    "demo": "demo",
    "bench": "bench",
}


class UsageError(Exception):
    """A bad command line (unknown option, bad value): ``main`` prints it as one line."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless its text already says it (or there is
    none to show: flags, options that default to "not given")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = (
            action.option_strings
            and action.nargs != 0
            and not any(default is nothing for nothing in (None, False, argparse.SUPPRESS))
            and default not in ([], ())
            and "default" not in text
        )
        return f"{text} (default: %(default)s)" if shown else text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach ``main`` (its subparsers are of this class too)
    and whose help shows defaults, including those of dataclass keys that flags spell out
    (``commands.options.describe_config_flags``), looked up only when help is printed."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(self.prog, message)

    def format_help(self) -> str:
        from geocells.commands.options import add_config_defaults_to_help

        add_config_defaults_to_help(self)
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand attached."""
    parser = _Parser(
        prog="geocells",
        description="Locate ground-level photos in a continent-size region (S2 cells + aerial).",
    )
    parser.add_argument("--version", action="version", version=f"geocells {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"geocells.commands.{module_name}")
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        _accept_verbose(command_parser)
        command_parser.set_defaults(_main=module.main)
    return parser


VERBOSE_HELP = "debug logging, tracebacks"


def _accept_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the subcommand too (and after a sub-subcommand: ``dataset check``)."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_verbose(child)


def _command_and_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """("dataset check", ["DATA"]): the (sub)command names and its positional arguments."""
    names, inputs = [], []
    current = parser
    while current is not None:
        chosen = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(args, action.dest, None)
                names.append(str(name))
                chosen = action.choices.get(name)
            elif not action.option_strings and action.dest != "overrides":
                value = getattr(args, action.dest, None)
                inputs.extend(map(str, value if isinstance(value, list) else [value]))
        current = chosen
    return " ".join(names), [item for item in inputs if item != "None"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geocells`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:  # one line, like every other error (--help still exits 0)
        print(f"{err.prog}: error: {err} (see {err.prog} --help)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command, inputs = _command_and_inputs(parser, args)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print(f"geocells {command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        if args.verbose:  # the traceback too, but the same exit status as without -v
            traceback.print_exc()
        print(f"geocells {command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the last line of defence: one line, not a traceback
        if args.verbose:
            traceback.print_exc()
        first_line = (str(err).strip().splitlines() or [""])[0]
        print(
            f"geocells {command}: unexpected {type(err).__name__}: {first_line} "
            f"(input: {' '.join(inputs) or 'none'}); rerun with -v for the traceback",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
