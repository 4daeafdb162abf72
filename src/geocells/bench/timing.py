"""Batch-1 and batch-64 timings of searchers (wall and CPU), shared by the continent
benchmark's measurements: one query at a time, several searchers alternating query by
query, and batches of 64."""

from __future__ import annotations

import time

import numpy as np


def timed_single(search, queries: np.ndarray, top_k: int):
    """Run queries one at a time: (rows [Q, k], wall ms per query, CPU ms per query).

    CPU time (all threads of the process) is what a query costs on an idle machine; wall
    time on the shared 2-core box includes waiting for the other engineers' jobs.
    """
    rows, times = [], []
    cpu_start = time.process_time()
    for query in queries:
        start = time.perf_counter()
        _, found = search(query[None], top_k)
        times.append(1000 * (time.perf_counter() - start))
        rows.append(found[0])
    return np.stack(rows), times, 1000 * (time.process_time() - cpu_start) / len(queries)


def batch64(searcher, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, dict]:
    """Rows and wall/CPU ms per query of the searcher at batch 64."""
    start, cpu_start = time.perf_counter(), time.process_time()
    _, rows = searcher.search(queries, top_k, batch_size=64)
    return rows, {
        "ann_ms_batch64": 1000 * (time.perf_counter() - start) / len(queries),
        "ann_cpu_ms_batch64": 1000 * (time.process_time() - cpu_start) / len(queries),
    }


def single_stats(times: list[float], cpu_ms: float) -> dict:
    """Mean / p50 / p95 wall ms and CPU ms per query of batch-1 timings."""
    return {
        "ann_ms_batch1_mean": float(np.mean(times)),
        "ann_ms_batch1_p50": float(np.percentile(times, 50)),
        "ann_ms_batch1_p95": float(np.percentile(times, 95)),
        "ann_cpu_ms_batch1": cpu_ms,
    }


def side_by_side(searchers: dict, queries: np.ndarray, top_k: int) -> dict:
    """Batch-1 timings of several searchers (anything with ``search(queries, top_k)``) on
    the same queries, alternating query by query (and which goes first), so a load change
    on the shared machine hits all alike."""
    names = list(searchers)
    rows = {name: [] for name in names}
    times = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    for number, query in enumerate(queries):
        for name in names if number % 2 == 0 else names[::-1]:
            start, cpu_start = time.perf_counter(), time.process_time()
            _, found = searchers[name].search(query[None], top_k)
            times[name].append(1000 * (time.perf_counter() - start))
            cpu[name] += 1000 * (time.process_time() - cpu_start)
            rows[name].append(found[0])
    return {
        name: {"rows": np.stack(rows[name]), **single_stats(times[name], cpu[name] / len(queries))}
        for name in names
    }
