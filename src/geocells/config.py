"""Typed configs: dataclass schemas, YAML presets and ``key=value`` overrides.

Every component declares a ``@dataclass`` with defaults; an experiment composes them.
``resolve_config`` merges a preset and dotted overrides into an instance of the schema,
rejects unknown keys with the list of valid ones, and checks the values the schema
declares limits for (``setting(default, at_least=..., one_of=...)``, and a node's
``cross_check()`` for what one field cannot say): one resolve, one check.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from geocells.io import write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value, key or preset that cannot be used."""


def require_at_least(cfg: Any, low: float, names: Sequence[str], where: str = "") -> None:
    """``ConfigError`` naming the first of ``names`` whose value on ``cfg`` is below ``low``.

    The one check behind every size option (``top_k``, ``batch_size``, workers...): the CLI
    flags (``geocells.commands.validate``) and the stage dataclasses' ``__post_init__``.
    """
    for name in names:
        value = getattr(cfg, name)
        if value < low:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{name} must be >= {low:g}, got {value!r}")


def setting(
    default: Any, *, at_least: float | None = None, one_of: Sequence[str] | None = None
) -> Any:
    """A dataclass field with ``default`` and the limits ``check_settings`` enforces:
    ``at_least`` (a size or count) or ``one_of`` (the valid names)."""
    limits: dict[str, Any] = {}
    if at_least is not None:
        limits["at_least"] = at_least
    if one_of is not None:
        limits["one_of"] = tuple(one_of)
    return dataclasses.field(default=default, metadata=limits)


def check_settings(cfg: Any, where: str = "") -> Any:
    """Check a config dataclass and its nested ones against their ``setting`` limits, then
    call each node's ``cross_check()`` (inner nodes first); ``ConfigError`` naming the first
    bad key. Returns ``cfg``."""
    for item in dataclasses.fields(cfg):
        value = getattr(cfg, item.name)
        key = f"{where}.{item.name}" if where else item.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_settings(value, key)
            continue
        low = item.metadata.get("at_least")
        if low is not None and value < low:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{item.name} must be >= {low:g}, got {value!r}")
        choices = item.metadata.get("one_of")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key} {value!r}; valid: {', '.join(choices)}")
    cross_check = getattr(cfg, "cross_check", None)
    if callable(cross_check):
        cross_check()
    return cfg


def preset_names(group: str) -> list[str]:
    """Names of the presets shipped as package data in ``configs/{group}/``."""
    folder = resources.files("geocells") / "configs" / group
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name_or_path: str | Path, group: str) -> dict[str, Any]:
    """Read a YAML preset: a file path, or a shipped name (``configs/{group}/{name}.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
    else:
        shipped = resources.files("geocells") / "configs" / group / f"{name_or_path}.yaml"
        if not shipped.is_file():
            valid = ", ".join(preset_names(group)) or "(none)"
            raise ConfigError(f"unknown preset {str(name_or_path)!r}; valid presets: {valid}")
        text = shipped.read_text()
    data = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name_or_path} is not a mapping")
    return data


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_valid_keys(value, f"{prefix}{field.name}."))
        else:
            keys.append(f"{prefix}{field.name}")
    return keys


def suggest_key(key: str, valid: Sequence[str]) -> str:
    """``"did you mean 'optim.lr'? "`` for the valid key closest to ``key``, else ``""``.

    Compares whole dotted keys, then the last part alone, so ``lr=1e-3`` and
    ``optim.lrr=1e-3`` both point at ``optim.lr``.
    """
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf: dict[str, str] = {}
        for name in valid:
            by_leaf.setdefault(name.rsplit(".", 1)[-1], name)
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), 1, 0.75)]
    return f"did you mean {close[0]!r}? " if close else ""


def resolve_config(
    schema: type[T],
    preset: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Build a ``schema`` instance from defaults, then ``preset``, then ``key=value`` overrides.

    Unknown keys and values of the wrong type raise ``ConfigError`` naming the key.
    """
    base = OmegaConf.structured(schema)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        merged = OmegaConf.merge(base, preset or {}, OmegaConf.from_dotlist(list(overrides)))
        obj = OmegaConf.to_object(merged)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key, keys = str(err.full_key), _valid_keys(schema())
        group = key.rsplit(".", 1)[0] + "." if "." in key else ""
        listed = [name for name in keys if group and name.startswith(group)] or keys
        where = f" under {group[:-1]}" if len(listed) < len(keys) else ""
        raise ConfigError(
            f"unknown config key {key!r}; {suggest_key(key, keys)}"
            f"valid keys{where}: {', '.join(listed)}"
        ) from None
    except ValidationError as err:
        raise ConfigError(f"bad value for config key {err.full_key!r}: {err.msg}") from None
    return check_settings(obj)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for JSON, YAML and checkpoints); tuples
    become lists, so the dict equals its own JSON round trip."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    return plain(dataclasses.asdict(cfg))


def config_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass (what ``save_config`` writes)."""
    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))


def save_config(cfg: Any, path: Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_text(path, config_yaml(cfg))


def load_config(schema: type[T], path: Path, overrides: Sequence[str] = ()) -> T:
    """Read a resolved YAML config (as written by ``save_config``) back into ``schema``,
    with ``key=value`` overrides on top."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a mapping")
    return resolve_config(schema, data, overrides)


def config_from_dict(schema: type[T], data: dict[str, Any] | DictConfig) -> T:
    """Rebuild a config dataclass from a plain dict (e.g. stored in a checkpoint)."""
    return resolve_config(schema, dict(data))
