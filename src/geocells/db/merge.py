"""``geocells index merge``: join the databases of a sharded build into one.

The output goes through ``geocells.outputs`` like every database: an existing one is
replaced only with ``overwrite`` (otherwise ``OutputError``), a folder holding other files
is refused, and so is an output that is one of the inputs (or inside one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from geocells.db.store import DATABASE_OUTPUT, Database, copy_arrays
from geocells.outputs import LOCK, MARKER, OutputError, OutputFolder, stage_output

log = logging.getLogger(__name__)

# Keys that legitimately differ between the shards of one build.
PER_SHARD = ("count", "shard", "cells_without_aerial")
# Files beside the arrays that every shard carries identically (taken from shard 0).
EXTRA_FILES = ("model", "region.geojson")


def merge(parts: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> Path:
    """Concatenate shard databases ``i/n`` (all n of one build) into ``out``."""
    out = Path(out)
    if not parts:
        raise ValueError("index merge needs the shard databases to merge")
    _refuse_input_as_output(parts, out)
    databases = sorted((Database.open(part) for part in parts), key=_shard_index)
    first = databases[0]
    count = first.meta.shard[1]
    found = [_shard_index(db) for db in databases]
    if found != list(range(count)):
        raise ValueError(f"index merge needs shards 0..{count - 1} of {count}, got {found}")
    reference = {k: v for k, v in first.meta.to_dict().items() if k not in PER_SHARD}
    for database in databases[1:]:
        other = {k: v for k, v in database.meta.to_dict().items() if k not in PER_SHARD}
        if other != reference:
            changed = sorted(
                k for k in other.keys() | reference.keys() if other.get(k) != reference.get(k)
            )
            raise ValueError(
                f"{database.path} is not a shard of the same build as {first.path} "
                f"(differs in {', '.join(changed)})"
            )
    total = sum(len(database) for database in databases)
    if total != first.meta.total_cells:
        raise ValueError(f"shards hold {total} cells, the build has {first.meta.total_cells}")
    with stage_output(
        out, DATABASE_OUTPUT, overwrite=overwrite, finished=_refuse_existing
    ) as folder:
        _write_merged(databases, folder)
    log.info("index merge: %d shards, %d cells -> %s", count, total, out)
    return out


def _refuse_existing(out: Path) -> bool:
    """``stage_output``'s check: a merge never keeps a database it finds in ``out``."""
    if any(name != MARKER and name != LOCK for name in (p.name for p in out.iterdir())):
        raise OutputError(f"{out} already holds a database; pass --overwrite to replace it")
    return False


def _refuse_input_as_output(parts: Sequence[str | Path], out: Path) -> None:
    """OutputError when ``out`` is one of ``parts``, inside one or holds one."""
    target = out.resolve()
    for part in parts:
        source = Path(part).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OutputError(
                f"index merge: --out {out} is the shard {part} (or holds it, or lies inside "
                "it); write the merged database to a new folder"
            )


def _write_merged(databases: list[Database], out: OutputFolder) -> None:
    """Arrays, the shared files of shard 0, then ``meta.json`` (last: it marks done)."""
    first = databases[0]
    total = sum(len(database) for database in databases)
    copy_arrays(databases, out)
    for name in EXTRA_FILES:
        source = first.path / name
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        for path in (path for path in files if path.is_file()):
            out.copy(path, path.relative_to(first.path).as_posix())
    without_aerial = sum(db.meta.cells_without_aerial for db in databases)
    meta = replace(
        first.meta, count=total, cells_without_aerial=without_aerial, shard=None, total_cells=None
    )
    out.save(meta)


def _shard_index(database: Database) -> int:
    shard = database.meta.shard
    if shard is None:
        raise ValueError(f"{database.path} is not a shard (built without --shard)")
    return int(shard[0])
