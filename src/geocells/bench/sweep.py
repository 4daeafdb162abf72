"""Other search settings on the benchmark's index, each timed beside the index's own.

A setting is ``NPROBExRERANK``. Its agreement and batch-64 time cover all queries; its
batch-1 time covers the first ``single_count`` queries, **alternating query by query**
(and which goes first) with the index's own setting, so a load change on the shared
machine hits both alike and the ratio of the two columns is what the setting costs.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


def parse_setting(setting: str) -> tuple[int, int]:
    """``"362x512"`` -> (362, 512); ValueError for anything else."""
    parts = str(setting).split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"sweep setting {setting!r} is not NPROBExRERANK, e.g. 64x128")
    return int(parts[0]), int(parts[1])


def measure_sweep(
    searcher,
    settings: list[str],
    queries: np.ndarray,
    exact_rows: np.ndarray,
    top_k: int,
    single_count: int = 200,
) -> list[dict]:
    """One dict per setting: nprobe, rerank, top-1 agreement with ``exact_rows`` (batch 64),
    batch-1 wall/CPU ms of the setting and of the searcher's own params alternated with
    it, batch-64 wall/CPU ms. The searcher's params are restored."""
    own = searcher.params
    found = []
    try:
        for setting in settings:
            probes, rerank = parse_setting(setting)
            other = dataclasses.replace(own, nprobe=probes, rerank=rerank)
            times = {"setting": [], "own": []}
            cpu = {"setting": 0.0, "own": 0.0}
            for number, query in enumerate(queries[:single_count]):
                order = [("setting", other), ("own", own)]
                for name, params in order if number % 2 == 0 else order[::-1]:
                    searcher.params = params
                    start, cpu_start = time.perf_counter(), time.process_time()
                    searcher.search(query[None], top_k)
                    times[name].append(1000 * (time.perf_counter() - start))
                    cpu[name] += 1000 * (time.process_time() - cpu_start)
            searcher.params = other
            start, cpu_start = time.perf_counter(), time.process_time()
            _, rows = searcher.search(queries, top_k, batch_size=64)
            count = min(single_count, len(queries))
            found.append({
                "nprobe": probes,
                "rerank": rerank,
                "top1_agreement": float(np.mean(rows[:, 0] == exact_rows[:, 0])),
                "ann_ms_batch64": 1000 * (time.perf_counter() - start) / len(queries),
                "ann_cpu_ms_batch64": 1000 * (time.process_time() - cpu_start) / len(queries),
                "ann_ms_batch1_mean": float(np.mean(times["setting"])),
                "ann_cpu_ms_batch1": cpu["setting"] / count,
                "own_ms_batch1_mean": float(np.mean(times["own"])),
                "own_cpu_ms_batch1": cpu["own"] / count,
            })  # fmt: skip
    finally:
        searcher.params = own
    return found
