"""Shared CLI plumbing: ``--config PRESET`` plus ``key=value`` overrides on every stage.

A stage's settings are one dataclass (its defaults are the only defaults); the command
line names a preset (a shipped name from ``configs/GROUP/`` or a YAML file) and dotted
``key=value`` overrides, in any order with the other arguments. Convenience flags
(``--rotations 4``) are spelled-out overrides with no default of their own.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# A dotted identifier followed by "=": an override, wherever it stands on the line.
OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def add_config_arguments(parser: argparse.ArgumentParser, group: str, example: str) -> None:
    """``--config PRESET`` and trailing ``key=value`` overrides (collected from anywhere)."""
    from geocells.config import preset_names

    shipped = ", ".join(preset_names(group)) or "none shipped"
    parser.add_argument(
        "--config",
        metavar="PRESET",
        help=f"{group} preset name ({shipped}) or a YAML file; the defaults are the dataclass's",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", default=[], help=f"overrides, e.g. {example}"
    )
    accept_overrides_anywhere(parser)


def accept_overrides_anywhere(parser: argparse.ArgumentParser) -> None:
    """Pull ``key=value`` items out of the arguments before argparse sees them.

    argparse fills positionals at their first occurrence, so an override after an option
    (``index RUN --out DB upsample=parent``) would be an "unrecognized argument", and one
    next to a ``nargs="+"`` positional would be taken for a path.
    """
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        items = list(args or [])
        overrides = [item for item in items if OVERRIDE.match(item)]
        rest = [item for item in items if not OVERRIDE.match(item)]
        namespace, extras = parse_known(rest, namespace)
        namespace.overrides = [*(getattr(namespace, "overrides", None) or []), *overrides]
        return namespace, extras

    parser.parse_known_args = parse_known_args


def flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    """``key=value`` items for the convenience flags given (``flags``: dest -> config key)."""
    items = []
    for dest, key in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            items.append(f"{key}={value}")
    return items


def stage_config(
    schema: type[T],
    group: str,
    args: argparse.Namespace,
    flags: Sequence[str] = (),
    base: dict[str, Any] | None = None,
) -> T:
    """The stage's config: ``base`` (e.g. a run's saved settings), then the ``--config``
    preset, then convenience ``flags``, then the ``key=value`` overrides (last wins)."""
    from omegaconf import OmegaConf

    from geocells.config import load_preset, resolve_config

    preset = load_preset(args.config, group) if getattr(args, "config", None) else {}
    merged = OmegaConf.to_container(OmegaConf.merge(base or {}, preset))
    return resolve_config(schema, merged, [*flags, *args.overrides])


def describe_config_flags(
    parser: argparse.ArgumentParser, schema: str, flags: dict[str, str]
) -> None:
    """Mark ``flags`` (dest -> key) as spelled-out keys of the dataclass ``schema``
    (``"module:Class"``) so ``--help`` shows the dataclass's defaults; the module is
    imported only when help is printed (stage modules import torch)."""
    parser.config_schema = schema  # type: ignore[attr-defined]
    for action in parser._actions:
        if action.dest in flags:
            action.config_key = flags[action.dest]  # type: ignore[attr-defined]


def add_config_defaults_to_help(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` from the dataclass to the help of flags marked by
    ``describe_config_flags`` (once; value-less flags such as ``--no-progress`` excepted)."""
    schema = getattr(parser, "config_schema", None)
    if schema is None or getattr(parser, "_config_defaults_shown", False):
        return
    module, _, name = schema.partition(":")
    defaults = getattr(importlib.import_module(module), name)()
    for action in parser._actions:
        key = getattr(action, "config_key", None)
        if key is None or action.nargs == 0 or "default" in (action.help or ""):
            continue
        value = defaults
        for part in key.split("."):
            value = getattr(value, part)
        action.help = f"{action.help or ''} (default: {_plain(value)})"
    parser._config_defaults_shown = True  # type: ignore[attr-defined]


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``. Bars are drawn with tqdm's ``disable=None`` when wanted, so they
    are also off when standard error is not a terminal (no ``\\r`` frames in a log)."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are off anyway when standard error is not a terminal)",
    )
