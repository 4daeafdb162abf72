"""The on-disk cell-code database: arrays as memmaps, metadata as JSON.

A database folder holds ``cells.npy`` (uint64 S2 ids, sorted), ``aerial.npy`` and
``proto.npy`` (float16 ``[N, D]``, L2-normalised rows), ``meta.json`` and ``model/`` (a
copy of the checkpoint that encoded it). ``meta.json`` is written last, so a folder
without it is an unfinished build. See docs/database.md.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from geocells.io import ArtifactError, DatabaseMeta, atomic_write

log = logging.getLogger(__name__)

ARRAYS = ("cells", "aerial", "proto")


def save_chunk(path: Path, cells: np.ndarray, aerial: np.ndarray, proto: np.ndarray) -> None:
    """Store one encoded chunk atomically (``.npz`` written to a temp name, then renamed)."""
    with atomic_write(path) as tmp:
        np.savez(tmp, cells=cells, aerial=aerial, proto=proto)


def load_chunk(path: Path) -> dict[str, np.ndarray]:
    """Read a chunk written by ``save_chunk``."""
    with np.load(path) as data:
        return {name: data[name] for name in ARRAYS}


def assemble(out: Path, chunk_files: Iterable[Path], count: int, dim: int) -> None:
    """Concatenate chunk files (in the given order) into the memmaps of ``out``."""
    cells = np.lib.format.open_memmap(out / "cells.npy", "w+", np.uint64, (count,))
    aerial = np.lib.format.open_memmap(out / "aerial.npy", "w+", np.float16, (count, dim))
    proto = np.lib.format.open_memmap(out / "proto.npy", "w+", np.float16, (count, dim))
    position = 0
    for path in chunk_files:
        chunk = load_chunk(path)
        stop = position + len(chunk["cells"])
        if stop > count:
            raise ValueError(f"chunks hold more than the expected {count} cells ({path})")
        cells[position:stop] = chunk["cells"]
        aerial[position:stop] = chunk["aerial"]
        proto[position:stop] = chunk["proto"]
        position = stop
    if position != count:
        raise ValueError(f"chunks hold {position} cells, expected {count}")
    for array in (cells, aerial, proto):
        array.flush()


def copy_arrays(parts: list[Database], out: Path) -> None:
    """Concatenate the arrays of several databases into ``out`` (memmap to memmap)."""
    count = sum(len(part) for part in parts)
    dim = parts[0].dim
    targets = {
        "cells": np.lib.format.open_memmap(out / "cells.npy", "w+", np.uint64, (count,)),
        "aerial": np.lib.format.open_memmap(out / "aerial.npy", "w+", np.float16, (count, dim)),
        "proto": np.lib.format.open_memmap(out / "proto.npy", "w+", np.float16, (count, dim)),
    }
    position = 0
    for part in parts:
        stop = position + len(part)
        for name, target in targets.items():
            target[position:stop] = getattr(part, name)
        position = stop
    for target in targets.values():
        target.flush()


class Database:
    """An opened cell-code database: memmapped arrays plus its typed ``meta``."""

    def __init__(self, path: Path, meta: DatabaseMeta, mmap_mode: str | None = "r") -> None:
        self.path = path
        self.meta = meta
        self.cells: np.ndarray = np.load(path / "cells.npy", mmap_mode=mmap_mode)
        self.aerial: np.ndarray = np.load(path / "aerial.npy", mmap_mode=mmap_mode)
        self.proto: np.ndarray = np.load(path / "proto.npy", mmap_mode=mmap_mode)
        count, dim = meta.count, meta.dim
        for name, array, shape in (
            ("cells", self.cells, (count,)),
            ("aerial", self.aerial, (count, dim)),
            ("proto", self.proto, (count, dim)),
        ):
            if array.shape != shape:
                raise ValueError(f"{path / name}.npy has shape {array.shape}, meta says {shape}")

    @classmethod
    def open(cls, path: str | Path, mmap_mode: str | None = "r") -> Database:
        """Open a finished database folder (``meta.json`` present), arrays memory-mapped.

        A ``meta.json`` of a version this geocells cannot read is refused with an
        ``ArtifactError`` that names the version and the commands that rebuild it.
        """
        path = Path(path)
        if not (path / DatabaseMeta.FILE).is_file():
            if path.is_dir() and (path / "build.json").is_file():
                raise ValueError(f"database {path} is unfinished: run `geocells index` again")
            raise OSError(f"not a geocells database (no meta.json): {path}")
        return cls(path, DatabaseMeta.load(path), mmap_mode)

    def __len__(self) -> int:
        return self.meta.count

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.meta.dim

    @property
    def kappa(self) -> float:
        """The fusion weight κ in ``score = sim_A + κ · sim_P``."""
        return float(self.meta.kappa)

    @property
    def cell_level(self) -> int:
        """S2 level of the database cells (Lc)."""
        return self.meta.cell_level

    @property
    def model_path(self) -> Path:
        """The database's own copy of the model that encoded it."""
        return self.path / self.meta.model_file

    def dataset_path(self, override: str | Path | None = None) -> Path:
        """``override`` when given, else the dataset the database was built from."""
        if override is not None:
            return Path(override)
        if not self.meta.dataset:
            raise ArtifactError(f"database {self.path} does not name its dataset; pass --dataset")
        return Path(self.meta.dataset)

    def update_meta(self, **updates: Any) -> None:
        """Change ``meta.json`` fields (atomically) and in memory."""
        self.meta = replace(self.meta, **updates)
        self.meta.save(self.path)

    def remove_files(self) -> None:
        """Delete the database folder (used by ``--overwrite``)."""
        shutil.rmtree(self.path)
