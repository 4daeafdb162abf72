"""Locate speed on a database: batched throughput, single-image latency, search alone.

Query images are the test split of the database's dataset (first ``--n`` readable ones)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/locate_bench.py DB --threads 2

Reports (issue 5 §6): images/s of ``Localizer.locate`` in batches (images already
decoded, and from JPEG paths), ms per image at batch 1 (median, p90), and the search
part alone (ms per query at batch 1 and at batch 64) with the backend actually used;
with ``--compare-ann``, recall@1 within 100 m of exact search against IVF-PQ.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def _timed(function, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _test_split(localizer, n: int):
    """Paths and true positions of the first ``n`` test images of the database's dataset."""
    from geocells.data.dataset import Dataset

    if not localizer.database.meta.dataset:
        raise ValueError(f"database {localizer.database.path} names no dataset (meta.json)")
    dataset = Dataset.open(Path(localizer.database.meta.dataset))
    manifest = dataset.manifest.split("test")
    if len(manifest) == 0:
        raise ValueError(f"dataset {dataset.root} has no test images to time")
    return [Path(p) for p in manifest.path[:n]], manifest.lat[:n], manifest.lon[:n]


def compare_ann(localizer, queries: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
    """Recall@1 within 100 m of exact search and of an IVF-PQ index built for the DB's κ."""
    from geocells.geo import cell_to_latlng, haversine_m
    from geocells.search.ivfpq import CellSearcher

    database = localizer.database
    for backend in ("exact", "ivfpq"):
        start = time.perf_counter()
        searcher = CellSearcher.build(database.aerial, database.proto, database.kappa, backend)
        built = time.perf_counter() - start
        _, rows = searcher.search(queries, 1)
        cell_lat, cell_lon = cell_to_latlng(np.asarray(database.cells)[rows[:, 0]])
        recall = np.mean(haversine_m(cell_lat, cell_lon, lat, lon) <= 100.0)
        print(f"{backend:>6}: recall@1 within 100 m {100 * recall:5.1f}% on {len(queries)} "
              f"test queries (index built in {built:.1f} s)")  # fmt: skip


def main() -> None:
    """Parse arguments, run the three measurements, print a small table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path, help="database folder (e.g. the demo's)")
    parser.add_argument("--n", type=int, default=256, help="query images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--backend", default="auto", choices=("auto", "exact", "ivfpq"))
    parser.add_argument("--repeats", type=int, default=20, help="single-image repeats")
    parser.add_argument(
        "--compare-ann", action="store_true",
        help="also recall@1 within 100 m, exact vs IVF-PQ (test split)",
    )  # fmt: skip
    args = parser.parse_args()

    import faiss
    import torch

    from geocells.data import load_image
    from geocells.locate import Localizer

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    localizer = Localizer.load(args.db, backend=args.backend, batch_size=args.batch_size)
    paths, lat, lon = _test_split(localizer, args.n)
    images = [load_image(p) for p in paths]
    n = len(images)

    decoded = _timed(lambda: localizer.locate(images, top_k=5), 1)[0]
    from_files = _timed(lambda: localizer.locate(paths, top_k=5), 1)[0]
    single = _timed(lambda: localizer.locate(images[:1], top_k=5), args.repeats)
    queries = localizer.embed(images)
    batch_64 = queries[:64]
    search_1 = _timed(lambda: [localizer.searcher.search(q[None], 5) for q in queries[:32]], 3)
    search_64 = _timed(lambda: localizer.searcher.search(batch_64, 5), 5)

    omp = os.environ.get("OMP_WAIT_POLICY")
    print(f"machine: {platform.node()} cpus={os.cpu_count()} threads={args.threads} "
          f"OMP_WAIT_POLICY={omp}")  # fmt: skip
    print(f"database: {args.db} ({len(localizer.database)} cells, D={localizer.database.dim}, "
          f"backend {localizer.searcher.backend}, model {localizer.model.card.model.backbone} "
          f"@ {localizer.model.ground.input_size} px)")  # fmt: skip
    print(f"locate, batch {args.batch_size}, decoded images: {n / decoded:8.1f} images/s")
    print(f"locate, batch {args.batch_size}, from JPEG files: {n / from_files:8.1f} images/s")
    print(f"locate, one image:  median {1e3 * statistics.median(single):7.1f} ms, "
          f"p90 {1e3 * np.percentile(single, 90):7.1f} ms")  # fmt: skip
    print(f"search only, batch 1:  {1e3 * min(search_1) / 32:8.3f} ms/query")
    print(
        f"search only, batch {len(batch_64)}: {1e3 * min(search_64) / len(batch_64):8.3f} ms/query"
    )
    if args.compare_ann:
        compare_ann(localizer, queries, lat, lon)


if __name__ == "__main__":
    main()
