"""Artifacts as typed, versioned contracts, atomic writes and hashing (the bottom layer).

A folder one stage writes and another reads has one dataclass here that writes and
reads it, with a format version: ``DatasetInfo`` (``dataset/dataset.json``), ``RunInfo``
(``run/run.json``) and ``DatabaseMeta`` (``db/meta.json``); the model's own contract,
``ModelCard``, lives with the model (``geocells.models.card``). Nothing guesses a key or
falls back to a default silently: a missing or unknown version is an ``ArtifactError``
that names the file, the version and the command that rebuilds it.

Every file is written through ``atomic_write`` (a temporary name in the same folder,
then ``os.replace``), so a reader never sees half of one and a killed writer leaves the
old file in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

log = logging.getLogger(__name__)

A = TypeVar("A", bound="Artifact")


class ArtifactError(ValueError):
    """An artifact file that is missing, malformed or of an unsupported version."""


# --- atomic writes -------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    ``with atomic_write(out / "x.npy") as tmp: np.save(tmp, array)``. The temporary name
    keeps the suffix (``.x.tmp.npy``) because numpy and faiss append or check it. On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise naming_file(err, path) from err
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in DISK_FULL and not (err.strerror or "").startswith("cannot write"):
            raise naming_file(err, path) from err
        raise
    except Exception as err:  # writers in Rust/C++ (safetensors) report "os error 28" in text
        code = _os_error_code(err)
        if code in DISK_FULL:
            raise naming_file(OSError(code, os.strerror(code)), path) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _os_error_code(err: Exception) -> int | None:
    """The errno a non-OSError names in its text ("... (os error 28)"), else None."""
    import re

    found = re.search(r"os error (\d+)", str(err))
    return int(found.group(1)) if found else None


def naming_file(err: OSError, path: str | Path) -> OSError:
    """``err`` again (same errno), its message naming the file and the folder it was to go
    in: "cannot write run.json in /runs/x: No space left on device (free space there...)"."""
    path = Path(path)
    reason = err.strerror or str(err)
    hint = " (free space there, or write elsewhere)" if err.errno in DISK_FULL else ""
    return OSError(err.errno, f"cannot write {path.name} in {path.parent}: {reason}{hint}")


def temporary_path(path: str | Path) -> Path:
    """The temporary file ``atomic_write`` writes beside ``path``: ``x.npy`` -> ``.x.tmp.npy``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def json_text(data: Any, indent: int | None = 2) -> str:
    """``data`` as the JSON every artifact is written in: sorted keys, trailing newline."""
    return json.dumps(data, indent=indent, sort_keys=True) + "\n"


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (sorted keys, trailing newline) to ``path`` atomically."""
    return write_text(path, json_text(data, indent))


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically (``target``'s folder is created)."""
    import shutil

    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def read_json(path: str | Path) -> Any:
    """Parsed JSON of ``path``; ``ArtifactError`` naming the file when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON ({err})") from None


# --- hashing ---------------------------------------------------------------------------


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprint(root: str | Path) -> str:
    """Hex SHA-256 of a dataset's region and world description and its aerial file list.

    Aerial rasters can be many gigabytes, so they enter by relative path and size only.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for name in ("region.geojson", "world.json"):
        path = root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    aerial = root / "aerial"
    files = sorted(p for p in aerial.rglob("*") if p.is_file()) if aerial.is_dir() else []
    for path in files:
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()


# --- versioned artifacts ---------------------------------------------------------------


@dataclass
class Artifact:
    """Base of the JSON artifacts: ``FILE`` in a folder, ``VERSION``, ``REBUILD`` advice.

    Subclasses are dataclasses of JSON-ready fields; ``migrate`` turns an older version's
    dict into the current one (or raises), so old folders keep loading where they can.
    """

    FILE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "artifact"
    REBUILD: ClassVar[str] = ""  # the command that rebuilds the folder, for error messages

    format_version: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        self.format_version = self.VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``format_version`` included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[A], data: dict[str, Any], source: str = "") -> A:
        """Rebuild from ``to_dict`` output of this or an older, migratable version."""
        where = source or cls.KIND
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != cls.VERSION:
            data = cls.migrate(dict(data), version, where)
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            advice = f"; rebuild it: {cls.REBUILD}" if cls.REBUILD else ""
            raise ArtifactError(f"{where}: {cls.KIND} lacks {', '.join(missing)}{advice}")
        unknown = sorted(set(data) - names)
        if unknown:
            log.debug("%s: ignoring keys this version does not know: %s", where, unknown)
        return cls(**{k: v for k, v in data.items() if k in names and k != "format_version"})

    @classmethod
    def migrate(cls, data: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
        """Bring an older version's dict up to date; the default refuses every other version."""
        raise cls.refusal(version, where)

    @classmethod
    def refusal(cls, version: Any, where: str) -> ArtifactError:
        """The error for a version this code cannot read: names it and the rebuild command."""
        found = "no format_version" if version is None else f"format_version {version}"
        advice = f"; rebuild it: {cls.REBUILD}" if cls.REBUILD else ""
        return ArtifactError(
            f"{where}: {cls.KIND} has {found}, this geocells reads version {cls.VERSION}{advice}"
        )

    def to_json(self) -> str:
        """The artifact's file content (``json_text`` of ``to_dict``: sorted keys)."""
        return json_text(self.to_dict())

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/FILE`` atomically."""
        return self.write(Path(folder) / self.FILE)

    def write(self, path: str | Path) -> Path:
        """Write the artifact to the file ``path`` atomically (``save`` names it ``FILE``)."""
        return write_text(path, self.to_json())

    @classmethod
    def load(cls: type[A], folder: str | Path) -> A:
        """Read ``folder/FILE``; ``ArtifactError`` naming the file when it is absent or bad."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            advice = f" (made by: {cls.REBUILD})" if cls.REBUILD else ""
            raise ArtifactError(f"{path} not found: {folder} is not a geocells {cls.KIND}{advice}")
        return cls.from_dict(read_json(path), str(path))

    @classmethod
    def read(cls: type[A], path: str | Path) -> A:
        """Read the file ``path`` (``load`` reads ``folder/FILE``); ``ArtifactError`` naming it."""
        path = Path(path)
        if not path.is_file():
            advice = f"; rebuild it: {cls.REBUILD}" if cls.REBUILD else ""
            raise ArtifactError(f"{path}: missing{advice}")
        return cls.from_dict(read_json(path), str(path))


@dataclass
class DatasetInfo(Artifact):
    """``dataset/dataset.json``: what a dataset folder holds and where it came from."""

    FILE: ClassVar[str] = "dataset.json"
    KIND: ClassVar[str] = "dataset description"
    REBUILD: ClassVar[str] = "geocells synth --out DATASET, or geocells import ... --out DATASET"

    source: str = ""  # synth | vigor | csv | osv5m | ...
    manifest: str = "ground/manifest.parquet"
    aerial: str = "aerial"
    fingerprint: str = ""  # dataset_fingerprint at the time of writing


@dataclass
class RunInfo(Artifact):
    """``run/run.json``: the dataset a training run used (absolute path) and its fingerprint."""

    FILE: ClassVar[str] = "run.json"
    KIND: ClassVar[str] = "training run"
    REBUILD: ClassVar[str] = "geocells train DATASET --out RUN"

    dataset: str = ""
    dataset_sha256: str = ""

    @classmethod
    def migrate(cls, data: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
        """Version-less ``run.json`` of earlier runs held only ``dataset``: that still reads."""
        if version is None and isinstance(data.get("dataset"), str):
            return {"dataset": data["dataset"], "format_version": cls.VERSION}
        raise cls.refusal(version, where)

    def dataset_path(self, override: str | Path | None = None) -> Path:
        """``override`` when given, else the recorded dataset (ValueError when none is)."""
        if override is not None:
            return Path(override)
        if not self.dataset:
            raise ArtifactError("the run does not record its dataset; pass --dataset")
        return Path(self.dataset)


def dataset_of_run(run_dir: str | Path, override: str | Path | None = None) -> Path:
    """The dataset ``run_dir`` was trained on (``override`` wins): read from ``run.json``."""
    if override is not None:
        return Path(override)
    run_dir = Path(run_dir)
    if run_dir.suffix == ".safetensors":  # a checkpoint: its run folder is above checkpoints/
        parent = run_dir.parent
        run_dir = parent.parent if parent.name == "checkpoints" else parent
    if not (run_dir / RunInfo.FILE).is_file():
        raise ArtifactError(
            f"run {run_dir} does not record its dataset (no run.json); use --dataset"
        )
    return RunInfo.load(run_dir).dataset_path()


@dataclass
class DatabaseMeta(Artifact):
    """``db/meta.json``: what a cell-code database holds and where it came from.

    Written last by ``geocells index`` (its presence marks a finished build); ``geocells
    calibrate`` adds κ, the confidence model and its report; ``geocells export milvus
    --out`` writes one with ``milvus`` set for a remote database (no code arrays).
    Version 1 (nested ``levels`` and ``model`` objects) is migrated on load.
    """

    FILE: ClassVar[str] = "meta.json"
    VERSION: ClassVar[int] = 2
    KIND: ClassVar[str] = "cell-code database"
    REBUILD: ClassVar[str] = "geocells index RUN --out DB --overwrite, then geocells calibrate DB"

    count: int
    dim: int
    cell_level: int  # Lc
    proto_level: int  # Lp
    tile_size_m: float  # aerial footprint per cell
    tile_px: int
    model_sha256: str
    model_file: str = "model/last.safetensors"  # relative to the database folder
    dataset: str = ""  # absolute path of the dataset it was built from
    dataset_sha256: str = ""
    region: dict[str, Any] = field(default_factory=dict)  # name, bounds, area_km2
    index: dict[str, Any] = field(default_factory=dict)  # the build settings (IndexConfig)
    kappa: float = 1.0
    kappa_calibrated: bool = False
    cells_without_aerial: int = 0
    confidence: dict[str, Any] | None = None  # ConfidenceModel.to_dict()
    calibration: CalibrationReport | None = None  # what `geocells calibrate` measured
    shard: list[int] | None = None  # [i, n] of a shard awaiting `index merge`
    total_cells: int | None = None  # cells of the whole sharded build
    # A remote database (``geocells export milvus --out``): the codes live in a Milvus
    # collection, this folder holds only cells.npy, the model and this file. Keys: uri,
    # collection, kappa, dim, count, vector_dtype, index, search_params, partitions.
    milvus: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> DatabaseMeta:
        """As ``Artifact.from_dict``; ``calibration`` becomes a ``CalibrationReport`` (a
        version-less report of an earlier ``calibrate`` is migrated, see there)."""
        meta = super().from_dict(data, source)
        report = meta.calibration
        if report is not None and not isinstance(report, CalibrationReport):
            meta.calibration = CalibrationReport.from_database(report, meta, source)
        return meta

    @classmethod
    def migrate(cls, data: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
        """Version 1 -> 2: ``levels.{cell,proto}`` and ``model.{file,sha256}`` become fields."""
        if version != 1:
            raise cls.refusal(version, where)
        try:
            levels, model = data.pop("levels"), data.pop("model")
            data.update(
                cell_level=int(levels["cell"]),
                proto_level=int(levels["proto"]),
                model_file=str(model["file"]),
                model_sha256=str(model["sha256"]),
                format_version=cls.VERSION,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(
                f"{where}: version-1 {cls.KIND} without levels/model ({err}); rebuild it: "
                f"{cls.REBUILD}"
            ) from None
        log.info("%s: read a version-1 database description", where)
        return data


@dataclass
class CalibrationReport(Artifact):
    """What ``geocells calibrate`` measured, kept in ``meta.json`` as ``calibration``.

    ``calibrate`` writes it, ``eval`` and ``geocells calibrate``'s summary read it. Reports
    of earlier versions (no ``format_version``) are migrated by ``from_database``.
    """

    KIND: ClassVar[str] = "calibration report"
    REBUILD: ClassVar[str] = "geocells calibrate DB"

    split: str  # the split κ was chosen on (val)
    dataset: str  # absolute path of the dataset of those queries
    dataset_sha256: str  # its dataset_fingerprint: eval compares it with its own dataset
    queries: int  # val images used
    radius_m: float  # recall@1 counts answers within this distance
    recall: float  # recall@1 within radius_m at the chosen κ
    recall_kappa_1: float  # the same at κ = 1
    median_error_m: float  # median top-1 error at the chosen κ
    grid: list[float]  # [kappa_min, kappa_max, kappa_steps]
    kappa_max_recall: float  # the κ of the grid's best recall
    max_gain_over_kappa_1: float  # its recall minus that of κ = 1
    max_gain_z: float | None  # that gain in standard errors; None: not measured (old report)
    min_gain_z: float  # the guard: κ = 1 was kept unless z reached this (0: no guard)
    ece: float  # in-sample expected calibration error of the confidence model
    top1_accuracy: float  # share of val top-1 answers within radius_m
    ece_cross_fitted: float | None = None  # cross-fitted ECE (None below 20 queries)

    @classmethod
    def from_database(cls, data: Any, meta: DatabaseMeta, where: str = "") -> CalibrationReport:
        """The report of ``meta.json`` (``data``), migrating a version-less one: reports from
        before ``calibrate`` recorded its dataset used the build dataset, and reports from
        before the κ = 1 guard chose the grid's maximum (``min_gain_z`` 0, z not measured).
        A report lacking what cannot be derived is refused, naming ``geocells calibrate``."""
        where = where or cls.KIND
        if not isinstance(data, dict):
            raise ArtifactError(
                f"{where}: expected a JSON object, got {data!r}; rebuild it: {cls.REBUILD}"
            )
        if "format_version" not in data:
            data = {"dataset": meta.dataset, "dataset_sha256": meta.dataset_sha256, **data}
            if "kappa_max_recall" not in data and {"recall", "recall_kappa_1"} <= set(data):
                gain = float(data["recall"]) - float(data["recall_kappa_1"])
                data.update(
                    kappa_max_recall=meta.kappa, max_gain_over_kappa_1=gain,
                    max_gain_z=None, min_gain_z=0.0,
                )  # fmt: skip
            data["format_version"] = cls.VERSION
            log.info("%s: read a version-less calibration report", where)
        return cls.from_dict(data, where)
