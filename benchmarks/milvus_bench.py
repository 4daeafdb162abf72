"""faiss IVF-PQ in process vs milvus-lite on the same codes and queries (issue 23).

Usage (from the repository root; the measurement in docs/scaling.md):

    nice -n 10 python benchmarks/milvus_bench.py --cells 1000000 --out bench/milvus-1m

Steps (each resumes from ``--out``): the first ``--cells`` level-16 cells of the region,
synthetic float16 codes (``geocells.bench.codes``, the continent benchmark's generator)
written as a database folder, ``--queries`` ground-like queries (cosine ~0.45 to their
cell); the exact top-1 of every query; then the same queries through

- ``faiss``: ``CellSearcher.build(..., "ivfpq")`` with the defaults for this size, in process;
- ``milvus``: ``geocells export milvus`` into a milvus-lite file (``--index-type``), then
  ``MilvusSearcher`` (each query a gRPC call to the embedded server).

It prints and writes ``results.json``: build/export time, ms per query at batch 1 and
batch 64, and top-1 agreement with the exact search.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss/numpy start threads

import numpy as np

log = logging.getLogger("milvus_bench")
KAPPA = 1.0


def make_database(out: Path, count: int, region: str, dim: int) -> Path:
    """A database folder of ``count`` cells with synthetic codes (reused when finished)."""
    from geocells.bench.codes import CodeField, CodeGenerator, write_codes
    from geocells.geo import Region, cover_region
    from geocells.io import DatabaseMeta, sha256_file

    db = out / "db"
    if (db / DatabaseMeta.FILE).is_file():
        return db
    db.mkdir(parents=True, exist_ok=True)
    chunks, total = [], 0
    for chunk in cover_region(Region.parse(region), 16):
        chunks.append(chunk[: count - total])
        total += len(chunks[-1])
        if total >= count:
            break
    cells = np.concatenate(chunks).astype(np.uint64)
    np.save(db / "cells.npy", cells)
    write_codes(cells, db, CodeGenerator(CodeField(dim=dim)), progress=True)
    model = db / "model" / "last.safetensors"
    model.parent.mkdir(exist_ok=True)
    model.write_bytes(b"benchmark: synthetic codes, no model")
    DatabaseMeta(
        count=len(cells), dim=dim, cell_level=16, proto_level=15, tile_size_m=154.0,
        tile_px=256, model_sha256=sha256_file(model), kappa=KAPPA, kappa_calibrated=True,
        region={"name": region},
    ).save(db)  # fmt: skip
    return db


def timed(searcher, queries: np.ndarray, single: int) -> dict:
    """Batch-1 (first ``single`` queries) and batch-64 timings; top-1 rows of all queries."""
    times = []
    for query in queries[:single]:
        start = time.perf_counter()
        searcher.search(query[None], 1)
        times.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    _, rows = searcher.search(queries, 1, batch_size=64)
    return {
        "ms_batch1_mean": float(np.mean(times)),
        "ms_batch1_p95": float(np.percentile(times, 95)),
        "ms_batch64": 1000 * (time.perf_counter() - start) / len(queries),
        "top1": rows[:, 0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="queries timed at batch 1")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--region", default="bedenl")
    parser.add_argument("--index-type", default="IVF_SQ8", help="milvus-lite index")
    parser.add_argument("--index-params", type=json.loads, default={})
    parser.add_argument("--search-params", type=json.loads, default={})
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from geocells.bench.codes import make_queries
    from geocells.db.store import Database
    from geocells.scoring.exact import exact_search
    from geocells.search import export
    from geocells.search.index_file import open_searcher
    from geocells.search.ivfpq import CellSearcher

    results: dict = {"cells": args.cells, "queries": args.queries, "dim": args.dim,
                     "load_before": os.getloadavg()[0]}  # fmt: skip
    database = Database.open(make_database(args.out, args.cells, args.region, args.dim))
    queries, _ = make_queries(database.aerial, database.proto, args.queries, noise=1.0, seed=7)
    exact_path = args.out / "exact_top1.npy"
    if not exact_path.is_file():
        _, rows = exact_search(queries, aerial=database.aerial, proto=database.proto,
                               kappa=KAPPA, top_k=1)  # fmt: skip
        np.save(exact_path, rows[:, 0])
    exact = np.load(exact_path)

    faiss_path = args.out / "faiss.json"  # a rerun (e.g. another Milvus index) reuses it
    if faiss_path.is_file():
        faiss = json.loads(faiss_path.read_text())
        faiss["top1"] = np.asarray(faiss["top1"])
    else:
        start = time.perf_counter()
        faiss_searcher = CellSearcher.build(database.aerial, database.proto, KAPPA, "ivfpq")
        faiss = {"build_s": time.perf_counter() - start, "params": vars(faiss_searcher.params)}
        faiss.update(timed(faiss_searcher, queries, args.single))
        faiss["bytes_per_cell"] = faiss_searcher.memory_bytes() / len(database)
        del faiss_searcher
        faiss_path.write_text(json.dumps({**faiss, "top1": faiss["top1"].tolist()}, default=str))

    cfg = export.MilvusExportConfig(
        uri=str(args.out / "cells.db"), collection="bench", index_type=args.index_type,
        index_params=args.index_params, search_params=args.search_params,
    )  # fmt: skip
    start = time.perf_counter()
    remote = export.run(cfg, database.path, args.out / "remote")
    milvus = {"export_s": time.perf_counter() - start}
    milvus_searcher = open_searcher(Database.open(remote))
    milvus["index"] = Database.open(remote).meta.milvus["index"]
    milvus["search_params"] = milvus_searcher.search_params
    milvus.update(timed(milvus_searcher, queries, args.single))

    for name, part in (("faiss_ivfpq", faiss), ("milvus_lite", milvus)):
        part["top1_agreement"] = float(np.mean(part.pop("top1") == exact))
        results[name] = part
    results["load_after"] = os.getloadavg()[0]
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
