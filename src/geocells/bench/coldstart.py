"""Cold start of the compressed searcher: what the refine file's page-cache state costs.

For each warm mode (``SQ8Refiner.warm``: off, query, load, auto) the refine file is evicted
from the page cache (only that file: ``pagecache.evict``), the index is loaded with that
mode, and the first queries are timed one by one. Load time, first-query and
first-queries latency show what warming costs at load and buys on the first queries; the
same queries run again (their pages now cached) show what each mode costs once warm.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path

import numpy as np

from geocells.bench.timing import timed_single

logger = logging.getLogger(__name__)


def measure_cold_start(
    index_path: Path,
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    queries: np.ndarray,
    top_k: int,
    modes: list[str],
) -> list[dict]:
    """One dict per warm mode: load s, refine file cached before/after, first query ms,
    mean / p50 ms and CPU ms of ``queries`` (batch 1), and their rows (for agreement)."""
    from geocells.search import pagecache
    from geocells.search.ivfpq import CellSearcher
    from geocells.search.refine import check_warm_mode, refine_path

    refine = refine_path(index_path)
    found = []
    for mode in modes:
        check_warm_mode(mode)
        gc.collect()  # no mapping of the file may survive: mapped pages are not evicted
        pagecache.evict(refine)
        before = pagecache.resident_fraction(np.load(refine, mmap_mode="r"))
        # The float16 rows the last 16 candidates are read from: cached or not, as it happens.
        database = [pagecache.resident_fraction(codes) for codes in (aerial, proto)]
        start, cpu_start = time.perf_counter(), time.process_time()
        searcher = CellSearcher.load(index_path, aerial, proto, kappa, warm=mode)
        load_s, load_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        rows, times, cpu_ms = timed_single(searcher.search, queries, top_k)
        # The same queries again: their pages are cached now, whatever the mode.
        _, steady_times, steady_cpu_ms = timed_single(searcher.search, queries, top_k)
        found.append({
            "warm": mode,
            "load_s": load_s,
            "load_cpu_s": load_cpu_s,
            "refine_cached_before": before,
            "database_cached_before": None if None in database else float(np.mean(database)),
            "refine_cached_after": pagecache.resident_fraction(searcher.refiner.codes),
            "first_query_ms": times[0],
            "queries": len(queries),
            "ms_mean": float(np.mean(times)),
            "ms_p50": float(np.median(times)),
            "cpu_ms": cpu_ms,
            "steady_ms_mean": float(np.mean(steady_times)),
            "steady_cpu_ms": steady_cpu_ms,
            "rows": rows,
        })  # fmt: skip
        logger.info(
            "cold start, warm=%s: load %.1f s, first query %.1f ms, %d queries %.2f ms mean",
            mode, load_s, times[0], len(queries), found[-1]["ms_mean"],
        )  # fmt: skip
        del searcher
    return found


def cold_start_table(rows: list[dict]) -> list[str]:
    """Markdown lines of the cold-start measurements (``results['search']['cold_start']``)."""
    if not rows:
        return []
    return [
        "Cold start: the refine file evicted from the page cache, then the index loaded with "
        f"each warm mode and its first {rows[0]['queries']} queries run one by one:",
        "",
        "| warm | load s (CPU) | refine file cached before → after | float16 database "
        "cached | first query ms | mean / p50 ms (CPU) | same queries again, ms (CPU) | "
        "top-1 agreement |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {row['warm']} | {row['load_s']:.1f} ({row['load_cpu_s']:.1f}) | "
            f"{_share(row['refine_cached_before'])} → {_share(row['refine_cached_after'])} | "
            f"{_share(row.get('database_cached_before'))} | "
            f"{row['first_query_ms']:.1f} | {row['ms_mean']:.2f} / {row['ms_p50']:.2f} "
            f"({row['cpu_ms']:.2f}) | {row['steady_ms_mean']:.2f} ({row['steady_cpu_ms']:.2f}) | "
            f"{row.get('top1_agreement', float('nan')):.3f} |"
            for row in rows
        ),
        "",
    ]


def _share(value: float | None) -> str:
    """A fraction as a percentage, '?' where unknown."""
    return "?" if value is None else f"{100 * value:.0f} %"
