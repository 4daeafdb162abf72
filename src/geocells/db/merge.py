"""``geocells index merge``: join the databases of a sharded build into one."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from geocells.db.store import Database, copy_arrays

log = logging.getLogger(__name__)

# Keys that legitimately differ between the shards of one build.
PER_SHARD = ("count", "shard", "cells_without_aerial")
# Files beside the arrays that every shard carries identically (taken from shard 0).
EXTRA_FILES = ("model", "region.geojson")


def merge(parts: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Concatenate shard databases ``i/n`` (all n of one build) into ``out``."""
    out = Path(out)
    if (out / "meta.json").is_file() and not overwrite:
        log.info("index merge: %s already exists; skipping (use --overwrite)", out)
        return out
    if not parts:
        raise ValueError("index merge needs the shard databases to merge")
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
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copy_arrays(databases, out)
    for name in EXTRA_FILES:
        source = first.path / name
        if source.is_dir():
            shutil.copytree(source, out / name)
        elif source.is_file():
            shutil.copy2(source, out / name)
    without_aerial = sum(db.meta.cells_without_aerial for db in databases)
    meta = replace(
        first.meta, count=total, cells_without_aerial=without_aerial, shard=None, total_cells=None
    )
    meta.save(out)
    log.info("index merge: %d shards, %d cells -> %s", count, total, out)
    return out


def _shard_index(database: Database) -> int:
    shard = database.meta.shard
    if shard is None:
        raise ValueError(f"{database.path} is not a shard (built without --shard)")
    return int(shard[0])
