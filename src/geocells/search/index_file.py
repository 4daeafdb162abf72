"""The compressed search index stored with a database (``DB/index.faiss`` + ``.json``).

The IVF-PQ index of ``geocells.search.ivfpq`` indexes ``aerial + κ · proto`` by default, so
it is tied to the κ it was built with: ``geocells calibrate`` (re)builds it after choosing
κ. Small databases use exact search and need no file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from geocells.db.store import RECALIBRATE, Database, DatabaseError
from geocells.io import ArtifactError
from geocells.search.index_meta import SearchIndexMeta
from geocells.search.ivfpq import AUTO_EXACT_MAX_CELLS, CellSearcher
from geocells.search.refine import refine_path

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"


def index_files(db: Path) -> list[Path]:
    """The index file, its JSON sidecar and its sq8 refine codes."""
    return [db / INDEX_FILE, SearchIndexMeta.path_of(db / INDEX_FILE), refine_path(db / INDEX_FILE)]


def write_search_index(
    db: Database | str | Path, backend: str = "auto", rebuild: bool = False
) -> Path | None:
    """Build and save the IVF-PQ index for the database's current κ when ``backend``
    resolves to it; ``None`` for exact search. ``rebuild`` replaces an existing index.
    ``db``: a folder, or an open handle (calibrate passes the one whose κ it just set)."""

    database = Database.of(db)
    path = database.path / INDEX_FILE
    if rebuild:
        for stale in index_files(database.path):
            stale.unlink(missing_ok=True)
    if backend == "exact" or (backend == "auto" and len(database) <= AUTO_EXACT_MAX_CELLS):
        log.info("%d cells: exact search, no index file needed", len(database))
        return None
    if path.is_file():
        log.info("%s already exists; skipping", path)
        return path
    log.info("building the IVF-PQ index over %d cells (κ = %.4g)", len(database), database.kappa)
    searcher = CellSearcher.build(
        database.aerial, database.proto, database.kappa, "ivfpq", progress=True,
        refine_file=refine_path(path),
    )  # fmt: skip
    return searcher.save(path)


def open_searcher(database: Database, backend: str = "auto", warm: str = "auto"):
    """The searcher that serves ``database``: its saved IVF-PQ index when it has one and
    ``backend`` allows it (auto | ivfpq), else one built now (exact for auto up to 200k);
    for a remote database (``meta.milvus``), its Milvus collection (auto | milvus).
    ``warm``: how a saved index's refine file enters the page cache (``CellSearcher.load``).

    Every searcher answers ``search(queries [Q, D], top_k) -> (scores [Q, k], rows [Q, k])``.
    """

    if database.remote:
        if backend not in ("auto", "milvus"):
            raise DatabaseError(
                database.path,
                f"a remote database is searched in its Milvus collection, not {backend!r}",
                None,
            )
        from geocells.search.milvus import MilvusSearcher

        meta = database.meta
        return MilvusSearcher.open(meta.milvus, meta.count, meta.dim, meta.kappa)
    if backend == "milvus":
        raise DatabaseError(
            database.path,
            "a local database has no Milvus collection; export one: geocells export milvus "
            f"{database.path} --uri URI --collection NAME --out REMOTE_DB",
            None,
        )
    path = database.path / INDEX_FILE
    if path.is_file() and backend in ("auto", "ivfpq"):
        return load_search_index(database, path, warm)
    return CellSearcher.build(database.aerial, database.proto, database.kappa, backend)


def load_search_index(database: Database, path: Path, warm: str = "auto") -> CellSearcher:
    """The saved index ``path`` of ``database``; ``DatabaseError`` naming the file that is
    missing, garbage, truncated or built for other codes (``geocells calibrate`` rebuilds
    them all)."""
    sidecar = SearchIndexMeta.path_of(path)
    try:
        return CellSearcher.load(path, database.aerial, database.proto, database.kappa, warm=warm)
    except ArtifactError as err:  # the sidecar (an ArtifactError is a ValueError: first)
        problem = str(err).removeprefix(f"{sidecar}: ").removesuffix(f"; rebuild it: {RECALIBRATE}")
        problem = problem.removeprefix(f"{sidecar} is ")  # "not valid JSON (...)"
        raise DatabaseError(sidecar, problem, RECALIBRATE) from None
    except FileNotFoundError as err:  # the sidecar or the refine file beside the index
        raise DatabaseError(path, str(err), RECALIBRATE) from None
    except (ValueError, TypeError, KeyError) as err:  # other codes, another κ, truncated
        message, refine = str(err), refine_path(path)
        where = refine if message.startswith(f"{refine} ") else path
        raise DatabaseError(where, message.removeprefix(f"{where} "), RECALIBRATE) from None
    except RuntimeError as err:  # faiss: a truncated or foreign index file
        problem = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
        raise DatabaseError(path, f"faiss cannot read it ({problem})", RECALIBRATE) from None
