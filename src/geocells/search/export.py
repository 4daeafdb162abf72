"""``geocells export milvus``: a database's fused codes into a Milvus collection.

``run(cfg, db, out)`` writes every row of the database as ``aerial + κ · proto`` at its
calibrated κ (see ``geocells.search.milvus`` for the collection's fields and partitions),
builds the index ``cfg.index_type`` and, with ``out``, a remote database folder
(``meta.json`` with ``milvus`` set, ``cells.npy``, the model; no codes) that
``Localizer.load``, ``geocells locate`` and ``geocells serve`` answer from.

Resumable: the collection itself records what is done. Each partition (then each batch
of it) is counted in the collection and skipped when complete; an incomplete batch is
upserted whole (the primary key is the row, so nothing is duplicated). A collection that
holds another export (other κ, model, layout) is refused unless ``overwrite``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from geocells.db.store import DATABASE_OUTPUT, RECALIBRATE, Database
from geocells.io import DatabaseMeta, sha256_file
from geocells.outputs import OutputFolder, stage_output
from geocells.scoring.exact import check_finite_rows, fused_codes
from geocells.search.milvus import (
    DEFAULT_INDEX_PARAMS,
    DEFAULT_SEARCH_PARAMS,
    EXPORT_PROPERTY,
    LITE_INDEX_TYPES,
    VECTOR_DTYPES,
    VECTOR_FIELD,
    MilvusError,
    call,
    connect,
    count_rows,
    export_description,
    is_lite,
)

log = logging.getLogger(__name__)

EXPORT_VERSION = 1


@dataclass
class MilvusExportConfig:
    """Settings of ``geocells export milvus`` (``index_type`` "auto": HNSW on milvus-lite,
    DISKANN on a server; empty params: the defaults of ``geocells.search.milvus``)."""

    uri: str = ""  # milvus-lite file (*.db) or http://host:19530
    collection: str = ""
    vector_dtype: str = "float32"  # float16 halves a server's memory; milvus-lite: float32
    index_type: str = "auto"
    index_params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)
    partitions: int = 64  # target partition count (at most one per parent cell)
    partition_level: int = 8  # S2 level of the parents a partition never splits
    batch_size: int = 8192  # rows per insert call
    timeout_s: float = 30.0  # connection timeout
    progress: bool = True

    def resolved(self) -> MilvusExportConfig:
        """A copy with the index type and parameters filled in; ValueError on bad values."""
        if not self.collection or not self.collection.replace("_", "a").isalnum():
            raise ValueError(
                f"collection name {self.collection!r}: letters, digits and _ only, not empty"
            )
        if self.vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype {self.vector_dtype!r}: expected one of {VECTOR_DTYPES}")
        if self.partitions < 1 or self.batch_size < 1 or not 0 <= self.partition_level <= 30:
            raise ValueError("partitions and batch_size must be >= 1, partition_level 0..30")
        lite = is_lite(self.uri)
        index_type = self.index_type.upper()
        if index_type == "AUTO":
            index_type = "HNSW" if lite else "DISKANN"
        if lite and index_type not in LITE_INDEX_TYPES:
            raise ValueError(
                f"milvus-lite cannot load a {index_type} index; use one of {LITE_INDEX_TYPES}"
            )
        if lite and self.vector_dtype != "float32":
            raise ValueError("milvus-lite stores float32 vectors only (vector_dtype=float32)")
        return MilvusExportConfig(
            **{
                **asdict(self),
                "index_type": index_type,
                "index_params": self.index_params or DEFAULT_INDEX_PARAMS.get(index_type, {}),
                "search_params": self.search_params or DEFAULT_SEARCH_PARAMS.get(index_type, {}),
            }
        )


def partition_ranges(cells: np.ndarray, level: int, target: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of sorted ``cells``: about ``target`` of equal size, cut
    only where the level-``level`` S2 parent changes (a parent never spans two)."""
    from geocells.geo import cell_parent

    cells = np.asarray(cells, dtype=np.uint64)
    parents = cell_parent(cells, min(level, int(_level(cells[:1])))) if len(cells) else cells
    changes = np.flatnonzero(parents[1:] != parents[:-1]) + 1
    ideal = np.arange(1, target) * (len(cells) / target)
    if len(changes) and len(ideal):
        nearest = np.clip(np.searchsorted(changes, ideal), 0, len(changes) - 1)
        cuts = np.unique(changes[nearest]).tolist()
    else:
        cuts = []
    bounds = [0, *cuts, len(cells)]
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _level(cells: np.ndarray) -> int:
    from geocells.geo import cell_level

    return int(cell_level(cells)[0]) if len(cells) else 30


def describe_partitions(cells: np.ndarray, ranges: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Name, rows and first/last cell token of each partition."""
    from geocells.geo import cell_to_token

    out = []
    for number, (start, stop) in enumerate(ranges):
        first, last = (str(t) for t in cell_to_token([cells[start], cells[stop - 1]]))
        out.append(
            {"name": f"p{number:04d}_{first}", "rows": [start, stop], "first_cell": first,
             "last_cell": last}
        )  # fmt: skip
    return out


def run(
    cfg: MilvusExportConfig,
    db: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> Path | None:
    """Export database ``db`` to ``cfg.collection`` at ``cfg.uri`` (resuming an unfinished
    export); with ``out``, write the remote database there. Returns ``out``.

    ``out`` is taken through ``outputs.stage_output`` before the (long) export and held
    until the remote database is written: a folder of foreign files or another database
    is refused (``overwrite`` replaces a database; never ``db`` itself)."""
    cfg = cfg.resolved()
    database = Database.open(db)
    if database.remote:
        raise ValueError(f"{database.path} is already a remote database; export a local one")
    if not database.meta.kappa_calibrated:
        log.warning("%s is not calibrated: exporting at κ = %g (%s first)", db, database.kappa,
                    RECALIBRATE)  # fmt: skip
    if out is None:
        _export(cfg, database, overwrite)
        return None
    out = Path(out)
    if out.resolve() == database.path.resolve():
        raise ValueError(f"--out {out} is the database being exported; choose another folder")
    check = _remote_check(cfg.collection)
    with stage_output(out, DATABASE_OUTPUT, overwrite=overwrite, finished=check) as folder:
        milvus = _export(cfg, database, overwrite)
        return write_remote_database(database, folder, milvus)


def _export(cfg: MilvusExportConfig, database: Database, overwrite: bool) -> dict[str, Any]:
    """Write (or resume writing) the collection; the ``milvus`` entry of the remote
    database's ``meta.json`` that describes it."""
    cells = np.asarray(database.cells)
    parts = describe_partitions(cells, partition_ranges(cells, cfg.partition_level, cfg.partitions))
    description = {
        "format_version": EXPORT_VERSION,
        "kappa": database.kappa,
        "dim": database.dim,
        "count": len(database),
        "model_sha256": database.meta.model_sha256,
        "vector_dtype": cfg.vector_dtype,
        "index": {"type": cfg.index_type, "params": cfg.index_params, "metric": "IP"},
        "partition_level": cfg.partition_level,
        "partitions": [part["name"] for part in parts],
    }
    client = connect(cfg.uri, cfg.timeout_s)
    started = time.perf_counter()
    _prepare_collection(client, cfg, description, parts, overwrite)
    written = _write_rows(client, cfg, database, parts)
    call(f"collection {cfg.collection!r}: flush", client.flush, cfg.collection)
    call(f"collection {cfg.collection!r}: load", client.load_collection, cfg.collection)
    total = count_rows(client, cfg.collection)
    if total != len(database):
        raise MilvusError(f"collection {cfg.collection!r} holds {total} rows after the export, "
                          f"expected {len(database)}")  # fmt: skip
    seconds = time.perf_counter() - started
    log.info("exported %d cells (%d written now) to %r at %s in %.1f s", len(database), written,
             cfg.collection, cfg.uri, seconds)  # fmt: skip
    return {
        "uri": cfg.uri,
        "collection": cfg.collection,
        **{k: description[k] for k in ("kappa", "dim", "count", "vector_dtype", "index")},
        "search_params": cfg.search_params,
        "partition_level": cfg.partition_level,
        "partitions": parts,
        "export_seconds": round(seconds, 1),
    }


def _prepare_collection(client, cfg, description, parts, overwrite: bool) -> None:
    """Create the collection, its index and partitions, or check an existing one is this
    export (``overwrite`` drops it first)."""
    name, where = cfg.collection, f"collection {cfg.collection!r} at {cfg.uri}"
    if call(f"{where}: listing", client.has_collection, name):
        if overwrite:
            log.info("dropping %s (--overwrite)", where)
            call(f"{where}: drop", client.drop_collection, name)
        else:
            found = export_description(client, cfg.uri, name)
            if found != description:
                changed = sorted(k for k in description if found.get(k) != description[k])
                raise MilvusError(
                    f"{where} holds another export (differs in {', '.join(changed)}); "
                    "pass --overwrite to replace it"
                )
            log.info("%s exists: resuming the export", where)
    if not call(f"{where}: listing", client.has_collection, name):
        _create_collection(client, cfg, description)
    existing = set(call(f"{where}: partitions", client.list_partitions, name))
    for part in parts:
        if part["name"] not in existing:
            call(f"{where}: create partition", client.create_partition, name, part["name"])
    call(f"{where}: load", client.load_collection, name)  # counting needs it loaded


def _create_collection(client, cfg, description) -> None:
    """The schema (row, cell_id, token, code), the index and the export description."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("cell_id", DataType.INT64)
    schema.add_field("token", DataType.VARCHAR, max_length=16)
    vector = DataType.FLOAT16_VECTOR if cfg.vector_dtype == "float16" else DataType.FLOAT_VECTOR
    schema.add_field(VECTOR_FIELD, vector, dim=description["dim"])
    index = client.prepare_index_params()
    index.add_index(VECTOR_FIELD, index_type=cfg.index_type, metric_type="IP",
                    params=cfg.index_params)  # fmt: skip
    where = f"collection {cfg.collection!r} at {cfg.uri}"
    # milvus-lite's server logs a harmless "AllocTimestamp not implemented" traceback here.
    grpc_log = logging.getLogger("grpc._server")
    level = grpc_log.level
    grpc_log.setLevel(logging.CRITICAL)
    try:
        call(f"{where}: create", client.create_collection, cfg.collection, schema=schema,
             index_params=index, consistency_level="Strong",
             properties={EXPORT_PROPERTY: json.dumps(description, sort_keys=True)})  # fmt: skip
    finally:
        grpc_log.setLevel(level)
    # A kill between the two calls leaves a collection without a description: refused on
    # resume (not ours), so set it before any row is written and check it arrived.
    found = call(f"{where}: describe", client.describe_collection, cfg.collection)
    if EXPORT_PROPERTY not in (found.get("properties") or {}):
        call(f"{where}: properties", client.alter_collection_properties, cfg.collection,
             properties={EXPORT_PROPERTY: json.dumps(description, sort_keys=True)})  # fmt: skip


def _write_rows(client, cfg, database: Database, parts) -> int:
    """Insert every missing batch, partition by partition; the number of rows written."""
    from tqdm import tqdm

    from geocells.geo import cell_to_token

    name = cfg.collection
    written = 0
    bar = tqdm(total=len(database), desc="export", unit="cell", disable=not cfg.progress)
    for part in parts:
        start, stop = part["rows"]
        present = count_rows(client, name, start, stop)
        if present == stop - start:
            bar.update(stop - start)
            continue
        for first in range(start, stop, cfg.batch_size):
            last = min(first + cfg.batch_size, stop)
            # Count batches only in a partly written partition (a count scans the data).
            if present == 0 or count_rows(client, name, first, last) < last - first:
                codes = fused_codes(database.aerial, database.proto, database.kappa, first, last)
                check_finite_rows(codes, first, "fused")
                cells = np.asarray(database.cells[first:last], dtype=np.uint64)
                rows = {
                    "row": np.arange(first, last, dtype=np.int64).tolist(),
                    "cell_id": cells.view(np.int64).tolist(),
                    "token": [str(t) for t in cell_to_token(cells)],
                    VECTOR_FIELD: _vectors(codes, cfg.vector_dtype),
                }
                entities = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values())]
                call(f"collection {name!r}: upsert rows {first}..{last}", client.upsert, name,
                     entities, partition_name=part["name"])  # fmt: skip
                written += last - first
            bar.update(last - first)
    bar.close()
    return written


def _vectors(codes: np.ndarray, dtype: str) -> list:
    """Rows as the client wants them: float32 lists, or float16 numpy rows."""
    if dtype == "float16":
        return list(codes.astype(np.float16))
    return list(codes)


def _remote_check(collection: str):
    """``stage_output``'s check of the remote folder: empty, or the remote database of this
    collection (rewritten: the export resumes); another database is refused."""

    def check(out: Path) -> bool:
        if (out / DatabaseMeta.FILE).is_file():
            existing = DatabaseMeta.load(out)
            if existing.milvus is None or existing.milvus.get("collection") != collection:
                raise ValueError(f"{out} holds another database; pass --overwrite to replace it")
        return False

    return check


def write_remote_database(database: Database, out: OutputFolder, milvus: dict[str, Any]) -> Path:
    """A database folder without codes, written through ``out``: ``cells.npy``, the model
    copy, the database's other small files (region, confidence reference, calibration
    curve) and a ``meta.json`` whose ``milvus`` names the collection (written last)."""
    with out.file("cells.npy") as tmp:
        np.save(tmp, np.asarray(database.cells))
    model = out.copy(database.model_path, database.meta.model_file)
    # What else the database's stages wrote at its top that is not codes, the faiss index
    # or the build's leftovers (region.geojson, confidence.npy, calibration.csv/.png).
    skip = {"aerial.npy", "proto.npy", "cells.npy", DatabaseMeta.FILE, "build.json"}
    for extra in sorted(database.path.iterdir()):
        if (
            extra.is_file()
            and DATABASE_OUTPUT.owns(extra.name)
            and extra.name not in skip
            and not extra.name.startswith(("index.faiss", "."))
        ):
            out.copy(extra, extra.name)
    if sha256_file(model) != database.meta.model_sha256:
        raise ValueError(f"{model}: the copied model does not match the database's")
    out.save(replace(database.meta, milvus=milvus, shard=None))
    return out.path
