"""The on-disk cell-code database: arrays as memmaps, metadata as JSON.

A database folder holds ``cells.npy`` (uint64 S2 ids, sorted), ``aerial.npy`` and
``proto.npy`` (float16 ``[N, D]``, L2-normalised rows), ``meta.json`` and ``model/`` (a
copy of the checkpoint that encoded it). ``meta.json`` is written last, so a folder
without it is an unfinished build. See docs/database.md.

``Database.open`` checks every file against ``meta.json`` (a JSON object with the expected
keys and types; each array's dtype and shape, so a truncated or empty ``.npy`` is caught)
and raises one ``DatabaseError`` naming the file and the command that rebuilds it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geocells.io import ArtifactError, DatabaseMeta, read_json
from geocells.outputs import OutputFolder, OutputKind

if TYPE_CHECKING:
    from geocells.data.dataset import Dataset
    from geocells.models import GeoModel

log = logging.getLogger(__name__)

ARRAYS = ("cells", "aerial", "proto")
ARRAYS_FILES = tuple(f"{name}.npy" for name in ARRAYS)
CALIBRATE_FILES = (
    "calibration.csv", "calibration.png", "index.faiss", "index.faiss.json",
    "index.faiss.sq8.npy", "confidence.npy",
)  # fmt: skip
BUILD_FILES = ("chunks", "build.json")  # an unfinished build's
DTYPES = {"cells": np.uint64, "aerial": np.float16, "proto": np.float16}
REBUILD = "geocells index RUN --out DB --overwrite"
RECALIBRATE = "geocells calibrate DB"
# Everything `index`, `index merge` and `calibrate` write at the top of a database folder.
DATABASE_OUTPUT = OutputKind(
    stage="index",
    known=(*ARRAYS_FILES, "meta.json", "model", "region.geojson", *CALIBRATE_FILES, *BUILD_FILES),
    signature=("meta.json", "build.json"),
)


class DatabaseError(ArtifactError):
    """A database file that is missing, truncated or malformed (the message names it and
    the command that rebuilds it)."""

    def __init__(self, path: str | Path, problem: str, rebuild: str | None = REBUILD) -> None:
        advice = f"; rebuild it: {rebuild}" if rebuild else ""
        super().__init__(f"{path}: {problem}{advice}")
        self.path = Path(path)


def save_chunk(
    out: OutputFolder, name: str, cells: np.ndarray, aerial: np.ndarray, proto: np.ndarray
) -> Path:
    """Store one encoded chunk as ``name`` in the build's folder (``.npz``, atomically)."""
    with out.file(name) as tmp:
        np.savez(tmp, cells=cells, aerial=aerial, proto=proto)
    return out.path / name


def load_chunk(path: Path) -> dict[str, np.ndarray]:
    """Read a chunk written by ``save_chunk``."""
    with np.load(path) as data:
        return {name: data[name] for name in ARRAYS}


@contextlib.contextmanager
def new_arrays(out: OutputFolder, count: int, dim: int) -> Iterator[dict[str, np.ndarray]]:
    """Writable memmaps ``cells [count]``, ``aerial``/``proto [count, dim]`` at temporary
    names in the stage's folder ``out``; flushed and renamed into place only when the block
    succeeds."""
    with contextlib.ExitStack() as stack:
        arrays = {}
        for name in ARRAYS:
            tmp = stack.enter_context(out.file(f"{name}.npy"))
            shape = (count,) if name == "cells" else (count, dim)
            arrays[name] = np.lib.format.open_memmap(tmp, "w+", DTYPES[name], shape)
        yield arrays
        for array in arrays.values():
            array.flush()
        arrays.clear()  # the memmaps close before the files are renamed


def assemble(out: OutputFolder, chunk_files: Iterable[Path], count: int, dim: int) -> None:
    """Concatenate chunk files (in the given order) into the arrays of ``out``."""
    with new_arrays(out, count, dim) as arrays:
        _fill_from_chunks(arrays, chunk_files, count)


def _fill_from_chunks(arrays: dict[str, np.ndarray], chunk_files: Iterable[Path], count: int):
    cells, aerial, proto = (arrays[name] for name in ARRAYS)
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


def copy_arrays(parts: list[Database], out: OutputFolder) -> None:
    """Concatenate the arrays of several databases into ``out`` (memmap to memmap)."""
    count = sum(len(part) for part in parts)
    with new_arrays(out, count, parts[0].dim) as targets:
        position = 0
        for part in parts:
            stop = position + len(part)
            for name, target in targets.items():
                target[position:stop] = getattr(part, name)
            position = stop


class Database:
    """An opened cell-code database: memmapped arrays plus its typed ``meta``.

    A remote database (``meta.milvus`` set, written by ``geocells export milvus --out``)
    holds ``cells.npy`` and the model but no codes: its ``aerial``/``proto`` raise
    ``DatabaseError``, and ``geocells.search`` answers from the Milvus collection.
    """

    def __init__(self, path: Path, meta: DatabaseMeta, mmap_mode: str | None = "r") -> None:
        self.path = path
        self.meta = meta
        count, dim = meta.count, meta.dim
        self.cells: np.ndarray = load_array(path, "cells", (count,), mmap_mode)
        self._codes: dict[str, np.ndarray] = {}
        self._models: dict[str, GeoModel] = {}
        if meta.milvus is None:
            for name in ("aerial", "proto"):
                self._codes[name] = load_array(path, name, (count, dim), mmap_mode)

    @property
    def remote(self) -> bool:
        """True for a remote database (codes in a Milvus collection, ``meta.milvus``)."""
        return self.meta.milvus is not None

    @property
    def aerial(self) -> np.ndarray:
        """Aerial codes float16 [N, D] (memmap); ``DatabaseError`` for a remote database."""
        return self._code_array("aerial")

    @property
    def proto(self) -> np.ndarray:
        """Upsampled prototype codes float16 [N, D]; ``DatabaseError`` for a remote one."""
        return self._code_array("proto")

    def _code_array(self, name: str) -> np.ndarray:
        if name not in self._codes:
            milvus = self.meta.milvus or {}
            raise DatabaseError(
                self.path,
                f"a remote database holds no {name} codes (they are fused at "
                f"κ = {self.meta.kappa:.4g} in the Milvus collection "
                f"{milvus.get('collection')!r} at {milvus.get('uri')!r}); use the local "
                "database it was exported from (re-calibrating κ means re-exporting: "
                "geocells calibrate DB, then geocells export milvus DB ...)",
                None,
            )
        return self._codes[name]

    @classmethod
    def open(
        cls, path: str | Path, mmap_mode: str | None = "r", *, recalibrating: bool = False
    ) -> Database:
        """Open a finished database folder (``meta.json`` present), every file checked.

        Anything missing, truncated or malformed (and a ``meta.json`` of a version this
        geocells cannot read) is a ``DatabaseError`` naming the file and the rebuild command.
        ``recalibrating`` (``geocells calibrate``, which rewrites them) leaves out the
        calibration report and confidence model, so an unreadable report can be replaced.
        """
        path = Path(path)
        if not (path / DatabaseMeta.FILE).is_file():
            if path.is_dir() and (path / "build.json").is_file():
                raise DatabaseError(
                    path, "the database is unfinished", "run the same `geocells index` again"
                )
            raise DatabaseError(path, "not a geocells database (no meta.json)")
        return cls(path, load_meta(path, recalibrating), mmap_mode)

    @classmethod
    def of(cls, db: Database | str | Path, *, recalibrating: bool = False) -> Database:
        """``db`` itself when it is an open handle, else ``Database.open(db, ...)``.

        How a stage takes its database: the CLI passes a folder, the pipeline the one
        handle it opened after ``index`` (``calibrate`` updates its ``meta`` in place, so
        ``eval`` on the same handle sees the new κ)."""
        if isinstance(db, Database):
            return db
        return cls.open(db, recalibrating=recalibrating)

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

    def open_dataset(self, dataset: Dataset | str | Path | None = None) -> Dataset:
        """``dataset`` (an open handle or a folder) when given, else the dataset the
        database was built from, opened."""
        from geocells.data.dataset import Dataset

        return Dataset.of(dataset if dataset is not None else self.dataset_path())

    def load_model(self, device: Any = "auto") -> GeoModel:
        """The model that encoded the database (its own copy, ``model_path``) on ``device``,
        loaded once per device and kept with this handle: stages given one handle share it."""
        from geocells.models import load_model
        from geocells.models.device import resolve_device

        target = resolve_device(device)
        if str(target) not in self._models:
            self._models[str(target)] = load_model(self.model_path, device=target)
        return self._models[str(target)]

    def update_meta(self, out: OutputFolder, **updates: Any) -> None:
        """Change ``meta.json`` fields in memory and in the file, written through ``out``:
        the writer of this database's folder that the caller got with its lock
        (``output_lock(path, DATABASE_OUTPUT)``)."""
        if out.path != self.path:
            raise ValueError(f"{out.path} is not the folder of database {self.path}")
        self.meta = replace(self.meta, **updates)
        out.save(self.meta)


# Fields of ``meta.json`` that must be numbers (and of which kind), and who rewrites them.
_INTEGERS = ("count", "dim", "cell_level", "proto_level", "tile_px")
_NUMBERS = {"tile_size_m": REBUILD, "kappa": RECALIBRATE}


def load_meta(path: Path, recalibrating: bool = False) -> DatabaseMeta:
    """``path/meta.json`` as a ``DatabaseMeta`` whose fields have the types the readers use
    (``recalibrating``: without the calibration report and confidence model)."""
    file = path / DatabaseMeta.FILE
    try:
        data = read_json(file)
        if recalibrating and isinstance(data, dict):
            data = {**data, "calibration": None, "confidence": None}
        meta = DatabaseMeta.from_dict(data, str(file))
    except ArtifactError as err:
        text = str(err).removeprefix(f"{file}: ")
        # A version refusal names the rebuild commands already.
        rebuild = None if "rebuild it" in text else REBUILD
        raise DatabaseError(file, text, rebuild) from None
    for name in _INTEGERS:
        value = getattr(meta, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DatabaseError(file, f"{name} must be a non-negative integer, got {value!r}")
    for name, rebuild in _NUMBERS.items():
        value = getattr(meta, name)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            raise DatabaseError(file, f"{name} must be a finite number, got {value!r}", rebuild)
    for name in ("confidence", "milvus"):
        value = getattr(meta, name)
        if value is not None and not isinstance(value, dict):
            raise DatabaseError(file, f"{name} must be an object, got {value!r}", RECALIBRATE)
    if not isinstance(meta.model_file, str) or not isinstance(meta.model_sha256, str):
        raise DatabaseError(file, "model_file and model_sha256 must be strings")
    return meta


def load_array(path: Path, name: str, shape: tuple[int, ...], mmap_mode: str | None) -> np.ndarray:
    """``path/name.npy`` with the dtype of ``DTYPES`` and ``shape``; ``DatabaseError`` else."""
    file = path / f"{name}.npy"
    if not file.is_file():
        raise DatabaseError(file, "missing")
    try:
        array = np.load(file, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # empty, truncated or not a .npy
        size = file.stat().st_size
        raise DatabaseError(file, f"unreadable .npy of {size} bytes ({err})") from None
    if array.dtype != DTYPES[name]:
        expected = np.dtype(DTYPES[name])
        raise DatabaseError(file, f"holds {array.dtype}, a database stores {expected}")
    if array.shape != shape:
        raise DatabaseError(file, f"has shape {array.shape}, meta.json says {shape}")
    return array
