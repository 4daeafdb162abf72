"""The Milvus backend: fused cell codes in a Milvus collection (DESIGN §6, past one machine).

A collection written by ``geocells export milvus`` holds one entity per database row:
``row`` (INT64 primary key, the row of the exported database), ``cell_id`` (the uint64 S2
id's 64 bits as INT64), ``token`` (S2 token) and ``code`` (``aerial + κ · proto``, float32
or float16, inner product). It is split into partitions of consecutive rows cut where the
S2 parent at ``partition_level`` changes, so each partition is a contiguous S2 id range a
deployment can place and a query can be restricted to. The same code talks to a Milvus
server (``http://host:19530``) and to milvus-lite (a local ``*.db`` path, no server).

``pymilvus`` is imported only here and only when a function needs it (the optional extra
``geocells[milvus]``); every failure reaches the caller as one ``MilvusError`` naming the
URI and the collection.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import numpy as np

from geocells.scoring.exact import check_queries, sort_desc

log = logging.getLogger(__name__)

VECTOR_FIELD = "code"
EXPORT_PROPERTY = "geocells.export"  # collection property: the export's JSON description
TOKEN_ENV = "GEOCELLS_MILVUS_TOKEN"  # credentials of a Milvus server (never written to disk)
VECTOR_DTYPES = ("float32", "float16")
# milvus-lite 3.2 loads only these (it accepts IVF_PQ and DISKANN at creation, then
# refuses to load them): HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8, BRUTE_FORCE.
LITE_INDEX_TYPES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "BRUTE_FORCE")
DEFAULT_INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"M": 32, "efConstruction": 128},
    "HNSW_SQ": {"M": 32, "efConstruction": 128, "sq_type": "SQ8"},
    "IVF_FLAT": {"nlist": 1024},
    "IVF_SQ8": {"nlist": 1024},
    "IVF_PQ": {"nlist": 65536, "m": 64, "nbits": 8},
    "DISKANN": {},
    "BRUTE_FORCE": {},
}
DEFAULT_SEARCH_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"ef": 128},
    "HNSW_SQ": {"ef": 128},
    "IVF_FLAT": {"nprobe": 64},
    "IVF_SQ8": {"nprobe": 64},
    "IVF_PQ": {"nprobe": 512},
    "DISKANN": {"search_list": 100},
    "BRUTE_FORCE": {},
}


class MilvusError(ValueError):
    """A Milvus collection that cannot serve: unreachable, missing, or not this database's."""


def is_lite(uri: str) -> bool:
    """True for a milvus-lite database file (a local path ending in ``.db``)."""
    return "://" not in uri and uri.endswith(".db")


def connect(uri: str, timeout_s: float = 10.0):
    """A ``pymilvus.MilvusClient`` for ``uri``; ``MilvusError`` when it cannot be had.

    A server's token (``user:password`` or an API key) comes from ``$GEOCELLS_MILVUS_TOKEN``.
    """
    if not uri:
        raise MilvusError("no Milvus URI given (a milvus-lite file *.db or http://host:19530)")
    if "://" not in uri and not uri.endswith(".db"):
        raise MilvusError(f"Milvus URI {uri!r}: a milvus-lite file must end in .db")
    try:
        from pymilvus import MilvusClient, MilvusException
    except ImportError:
        raise MilvusError(
            "the Milvus backend needs pymilvus: pip install 'geocells[milvus]'"
        ) from None
    if is_lite(uri):
        try:
            import milvus_lite  # noqa: F401  (pymilvus starts it for *.db URIs)
        except ImportError:
            raise MilvusError(f"{uri} is a milvus-lite file: pip install milvus-lite") from None
        if not os.path.isdir(os.path.dirname(os.path.abspath(uri))):
            raise MilvusError(f"milvus-lite file {uri}: its folder does not exist")
    # pymilvus logs every failed call with a traceback through its own handler; each one
    # reaches our caller as a MilvusError, so its log would only say the same thing twice.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    token = os.environ.get(TOKEN_ENV, "")
    try:
        return MilvusClient(uri=uri, token=token, timeout=timeout_s)
    except MilvusException as err:
        raise MilvusError(f"cannot reach Milvus at {uri}: {err.message}") from None
    except Exception as err:  # grpc and milvus-lite raise their own types
        raise MilvusError(f"cannot reach Milvus at {uri}: {type(err).__name__}: {err}") from None


def call(what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)`` with any client failure as one ``MilvusError``."""
    from pymilvus import MilvusException

    try:
        return function(*args, **kwargs)
    except MilvusException as err:
        raise MilvusError(f"{what}: {err.message or type(err).__name__}") from None


def export_description(client, uri: str, collection: str) -> dict[str, Any]:
    """The export description a collection carries; ``MilvusError`` when it is missing or
    is not a geocells export."""
    where = f"collection {collection!r} at {uri}"
    if not call(f"{where}: listing", client.has_collection, collection):
        raise MilvusError(
            f"{where} not found; export it: geocells export milvus DB --uri {uri} "
            f"--collection {collection}"
        )
    info = call(f"{where}: describe", client.describe_collection, collection)
    text = (info.get("properties") or {}).get(EXPORT_PROPERTY)
    if not text:
        raise MilvusError(f"{where} was not written by geocells export milvus")
    try:
        description = json.loads(text)
    except json.JSONDecodeError as err:
        raise MilvusError(f"{where}: its {EXPORT_PROPERTY} property is not JSON ({err})") from None
    if not isinstance(description, dict) or not isinstance(description.get("dim"), int):
        raise MilvusError(f"{where}: its {EXPORT_PROPERTY} property lacks the dimension")
    field = next((f for f in info["fields"] if f["name"] == VECTOR_FIELD), None)
    if field is None:
        raise MilvusError(f"{where} has no {VECTOR_FIELD!r} vector field")
    dim = int(field["params"]["dim"])
    if dim != description["dim"]:
        raise MilvusError(f"{where}: vector dimension {dim}, its export says {description['dim']}")
    return description


def count_rows(client, collection: str, start: int = 0, stop: int | None = None) -> int:
    """Entities with ``start <= row < stop`` (strongly consistent count)."""
    expression = f"row >= {int(start)}" + (f" and row < {int(stop)}" if stop is not None else "")
    result = call(
        f"collection {collection!r}: count",
        client.query,
        collection,
        filter=expression,
        output_fields=["count(*)"],
        consistency_level="Strong",
    )
    return int(result[0]["count(*)"])


class MilvusSearcher:
    """Top-k cells from a Milvus collection of fused codes (same interface as
    ``CellSearcher``: ``search(queries, top_k) -> (scores [Q, k], rows [Q, k])``).

    The codes were fused at export time, so ``kappa`` is fixed: another κ means a new
    export. Scores are the collection's inner products ``z_i · q``; ties are broken by the
    lower row, as in the exact search.
    """

    backend = "milvus"

    def __init__(self, client, milvus: dict[str, Any]) -> None:
        self.client = client
        self.uri = str(milvus["uri"])
        self.collection = str(milvus["collection"])
        self._kappa = float(milvus["kappa"])
        self._dim = int(milvus["dim"])
        self._count = int(milvus["count"])
        self.search_params = dict(milvus["search_params"])
        self.metric = "IP"

    @classmethod
    def open(
        cls, milvus: dict[str, Any], count: int, dim: int, kappa: float, timeout_s: float = 10.0
    ) -> MilvusSearcher:
        """Connect to the collection named by a remote database's ``meta.milvus`` and check
        it is that database's export (dimension, κ, row count); load it for search."""
        uri, collection = str(milvus["uri"]), str(milvus["collection"])
        where = f"collection {collection!r} at {uri}"
        client = connect(uri, timeout_s)
        found = export_description(client, uri, collection)
        if found["dim"] != dim:
            raise MilvusError(f"{where} holds {found['dim']}-d codes, the database {dim}-d")
        if not math.isclose(float(found["kappa"]), float(kappa), rel_tol=0, abs_tol=1e-12):
            raise MilvusError(
                f"{where} was exported at κ = {found['kappa']}, the database says κ = {kappa}; "
                "re-export it: geocells export milvus DB ... --overwrite"
            )
        call(f"{where}: load", client.load_collection, collection)
        rows = count_rows(client, collection)
        if rows != count:
            raise MilvusError(
                f"{where} holds {rows} of the database's {count} cells: the export is "
                "unfinished; run the same geocells export milvus again"
            )
        return cls(client, {**milvus, "count": count, "dim": dim, "kappa": kappa})

    @property
    def kappa(self) -> float:
        """The κ the collection's codes were fused with (fixed)."""
        return self._kappa

    @kappa.setter
    def kappa(self, value: float) -> None:
        if float(value) != self._kappa:
            raise ValueError(
                f"the Milvus collection {self.collection!r} holds codes fused at κ = "
                f"{self._kappa}; searching at κ = {value} needs a re-export"
            )

    @property
    def num_cells(self) -> int:
        """Number of database rows."""
        return self._count

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self._dim

    def memory_bytes(self) -> int:
        """Bytes held in this process for the codes: none (they live in Milvus)."""
        return 0

    def search(
        self,
        queries: np.ndarray,
        top_k: int = 5,
        batch_size: int = 256,
        partitions: list[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Queries float32 [Q, D] -> (scores float32 [Q, k], rows int64 [Q, k]), best first.

        ``partitions``: restrict the search to these partitions (a sub-region; see
        ``partitions_covering``). Where fewer than k cells were found the row is -1 and
        the score -inf.
        """
        queries = check_queries(queries, self.dim, top_k)
        k = min(top_k, self.num_cells)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for start in range(0, len(queries), batch_size):
            batch = queries[start : start + batch_size]
            hits = call(
                f"collection {self.collection!r} at {self.uri}: search",
                self.client.search,
                self.collection,
                data=batch.tolist(),
                limit=k,
                anns_field=VECTOR_FIELD,
                search_params={"metric_type": self.metric, "params": self.search_params},
                partition_names=partitions,
            )
            for offset, found in enumerate(hits):
                for rank, hit in enumerate(found[:k]):
                    rows[start + offset, rank] = int(hit["row"])  # the primary key
                    scores[start + offset, rank] = float(hit["distance"])
        return sort_desc(scores, rows)


def partitions_covering(partitions: list[dict[str, Any]], cells: np.ndarray) -> list[str]:
    """Names of the partitions that hold any cell inside the S2 ``cells`` (any levels):
    the partitions to search for a sub-region given by its covering."""
    from geocells.geo import cell_level, token_to_cell

    cells = np.asarray(cells, dtype=np.uint64)
    lsb = np.left_shift(np.uint64(1), (2 * (30 - cell_level(cells))).astype(np.uint64))
    low, high = cells - lsb + np.uint64(1), cells + lsb - np.uint64(1)
    names = []
    for part in partitions:
        first, last = token_to_cell([part["first_cell"], part["last_cell"]])
        if np.any((low <= last) & (high >= first)):
            names.append(str(part["name"]))
    return names
