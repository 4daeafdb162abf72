"""The on-disk cell-code database: arrays as memmaps, metadata as JSON.

A database folder holds ``cells.npy`` (uint64 S2 ids, sorted), ``aerial.npy`` and
``proto.npy`` (float16 ``[N, D]``, L2-normalised rows), ``meta.json`` and ``model/`` (a
copy of the checkpoint that encoded it). ``meta.json`` is written last, so a folder
without it is an unfinished build. See docs/database.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ARRAYS = ("cells", "aerial", "proto")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_chunk(path: Path, cells: np.ndarray, aerial: np.ndarray, proto: np.ndarray) -> None:
    """Store one encoded chunk atomically (``.npz`` written to a temp name, then renamed)."""
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, cells=cells, aerial=aerial, proto=proto)
    os.replace(tmp, path)


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
    """An opened cell-code database: memmapped arrays plus its ``meta`` dict."""

    def __init__(self, path: Path, meta: dict[str, Any], mmap_mode: str | None = "r") -> None:
        self.path = path
        self.meta = meta
        self.cells: np.ndarray = np.load(path / "cells.npy", mmap_mode=mmap_mode)
        self.aerial: np.ndarray = np.load(path / "aerial.npy", mmap_mode=mmap_mode)
        self.proto: np.ndarray = np.load(path / "proto.npy", mmap_mode=mmap_mode)
        count, dim = int(meta["count"]), int(meta["dim"])
        for name, array, shape in (
            ("cells", self.cells, (count,)),
            ("aerial", self.aerial, (count, dim)),
            ("proto", self.proto, (count, dim)),
        ):
            if array.shape != shape:
                raise ValueError(f"{path / name}.npy has shape {array.shape}, meta says {shape}")

    @classmethod
    def open(cls, path: str | Path, mmap_mode: str | None = "r") -> Database:
        """Open a finished database folder (``meta.json`` present), arrays memory-mapped."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            if path.is_dir() and (path / "build.json").is_file():
                raise ValueError(f"database {path} is unfinished: run `geocells index` again")
            raise OSError(f"not a geocells database (no meta.json): {path}")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: format_version {meta.get('format_version')} is not "
                f"{FORMAT_VERSION}; rebuild the database"
            )
        return cls(path, meta, mmap_mode)

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.meta["dim"])

    @property
    def kappa(self) -> float:
        """The fusion weight κ in ``score = sim_A + κ · sim_P``."""
        return float(self.meta["kappa"])

    @property
    def cell_level(self) -> int:
        """S2 level of the database cells (Lc)."""
        return int(self.meta["levels"]["cell"])

    def update_meta(self, **updates: Any) -> None:
        """Change top-level ``meta.json`` keys (atomically) and in memory."""
        self.meta.update(updates)
        write_json_atomic(self.path / "meta.json", self.meta)

    def search(
        self,
        queries: np.ndarray,
        top_k: int = 5,
        kappa: float | None = None,
        chunk_size: int = 65536,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of ``sim_A + κ sim_P``: ``[Q, D] -> (scores [Q, k], rows [Q, k])``."""
        return exact_search(
            queries,
            self.aerial,
            self.proto,
            self.kappa if kappa is None else kappa,
            top_k,
            chunk_size,
        )

    def remove_files(self) -> None:
        """Delete the database folder (used by ``--overwrite``)."""
        shutil.rmtree(self.path)


def exact_search(
    queries: np.ndarray,
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    top_k: int,
    chunk_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Chunked brute-force top-k: ``[Q, D] -> (scores float32[Q, k], rows int64[Q, k])``."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != aerial.shape[1]:
        raise ValueError(f"queries must be [Q, {aerial.shape[1]}], got {queries.shape}")
    top_k = min(top_k, len(aerial))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(aerial), chunk_size):
        stop = min(start + chunk_size, len(aerial))
        scores = queries @ np.asarray(aerial[start:stop], np.float32).T
        scores += np.float32(kappa) * (queries @ np.asarray(proto[start:stop], np.float32).T)
        rows = np.broadcast_to(np.arange(start, stop), scores.shape)
        all_scores = np.hstack([best_scores, scores])
        all_rows = np.hstack([best_rows, rows])
        keep = np.argpartition(-all_scores, top_k - 1, axis=1)[:, :top_k]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_rows = np.take_along_axis(all_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)
