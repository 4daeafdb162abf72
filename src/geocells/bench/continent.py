"""Continent benchmark: a region-wide database of synthetic cell codes, compressed vs exact search.

``run(cfg, out)`` covers the region, streams synthetic codes to float16 memmaps, builds the
compressed index, runs the same queries through it and through exact chunked search, and
writes ``results.json`` and ``results.md`` to ``out``. With ``baseline`` (the default) it
also builds the index with the defaults from before issue 23 (``out/baseline/``) and times
both on the same queries, alternating query by query, so the two are compared under the
same load. Finished stages (cells, codes, indexes) are kept and reused when the same
config is run again.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geocells.bench.codes import (
    CODES_VERSION,
    CodeField,
    CodeGenerator,
    make_queries,
    write_codes,
)
from geocells.bench.memory import PeakSampler, memory_status, reset_peak
from geocells.bench.report import markdown_table
from geocells.bench.timing import batch64, side_by_side, timed_single
from geocells.io import write_json

logger = logging.getLogger(__name__)


@dataclass
class ContinentBenchConfig:
    """What the continent benchmark builds and measures."""

    region: str = "bedenl"  # the paper's ~434,000 km² (25.3 M level-16 cells)
    level: int = 16
    land_only: bool = True
    max_cells: int = 0  # 0: the whole covering
    queries: int = 1000
    query_noise: float = 2.0  # norm of the noise added to a unit cell code (cos ~0.45)
    kappa: float = 1.0
    top_k: int = 5
    threads: int = 2
    exact_single: int = 2  # single exact queries timed (each scans the whole database)
    codes: CodeField = field(default_factory=CodeField)
    nlist: int = 0  # compressed index parameters; 0 / "auto" = pick from the size
    pq_m: int = 0
    coarse: str = "auto"
    nprobe: int = 0
    rerank: int = 0  # 0: the index's own default (512 with the sq8 refine, else 64)
    layout: str = "sum"
    baseline: bool = True  # also build and time the pre-issue-23 defaults side by side
    sweep: list[str] = field(default_factory=list)  # extra "NPROBExRERANK" settings
    # Refine-file warm modes timed from a cold page cache (bench.coldstart); [] skips it.
    cold_start: list[str] = field(default_factory=lambda: ["off", "query", "auto"])
    cold_queries: int = 50  # queries timed one by one after each cold load
    seed: int = 0


def _stage_key(cfg: ContinentBenchConfig, stage: str) -> dict:
    """The config fields a stage's output depends on (reuse only when they match)."""
    cells = {k: getattr(cfg, k) for k in ("region", "level", "land_only", "max_cells")}
    if stage == "cells":
        return cells
    codes = {**cells, "codes": dataclasses.asdict(cfg.codes), "generator": CODES_VERSION}
    if stage == "codes":
        return codes
    from geocells.search.ivfpq import BUILD_VERSION

    index_keys = ("nlist", "pq_m", "coarse", "layout", "seed")
    key = {**codes, **{k: getattr(cfg, k) for k in index_keys}, "build": BUILD_VERSION}
    return {**key, "variant": stage} if stage == "baseline" else key


# The compressed index's defaults before issue 23: 64 B PQ codes of the vectors (not of
# their residuals), no refine file, the float32 list finder scanning a quarter of its
# groups, 64 rows re-ranked exactly, nprobe 2·sqrt(nlist) with HNSW (build_index).
BASELINE_PARAMS = {"refine": "none", "finder": "flat", "rerank": 64, "residual": False}
STAGES = ("cells", "codes", "index", "baseline")


class _Stages:
    """``stages.json`` in the output folder: finished stages, their config keys and results."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        self.path = out / "stages.json"
        self.done = (
            {} if overwrite or not self.path.is_file() else json.loads(self.path.read_text())
        )

    def finished(self, name: str, key: dict) -> dict | None:
        """Stored results of ``name`` if it finished with the same ``key``."""
        entry = self.done.get(name)
        return entry["results"] if entry and entry["key"] == key else None

    def record(self, name: str, key: dict, results: dict) -> None:
        """Mark ``name`` finished (and drop stages after it, which depend on it)."""
        if name in ("cells", "codes"):  # the indexes depend on both, not on each other
            for later in STAGES[STAGES.index(name) + 1 :]:
                self.done.pop(later, None)
        self.done[name] = {"key": key, "results": results}
        write_json(self.path, self.done)


def cover_cells(cfg: ContinentBenchConfig, out: Path) -> dict:
    """Stream the region covering (at most ``max_cells``) to ``out/cells.npy``."""
    from tqdm import tqdm

    from geocells.geo import Region, cover_region

    region = Region.parse(cfg.region)
    start = time.perf_counter()
    raw = out / "cells.u64.tmp"
    total = 0
    # disable=None: a bar on a terminal only, never carriage-return frames in a log
    with raw.open("wb") as sink, tqdm(desc="covering", unit="cell", disable=None) as bar:
        for chunk in cover_region(region, cfg.level, land_only=cfg.land_only):
            if cfg.max_cells:
                chunk = chunk[: cfg.max_cells - total]
            sink.write(np.ascontiguousarray(chunk, np.uint64).tobytes())
            total += chunk.size
            bar.update(chunk.size)
            if cfg.max_cells and total >= cfg.max_cells:
                break
    seconds = time.perf_counter() - start
    if total == 0:
        raise ValueError(f"region {cfg.region!r} has no level-{cfg.level} cells to cover")
    cells = np.lib.format.open_memmap(out / "cells.npy", "w+", np.uint64, (total,))
    cells[:] = np.memmap(raw, np.uint64, "r", shape=(total,))
    cells.flush()
    del cells
    raw.unlink()
    complete = not cfg.max_cells or total < cfg.max_cells
    return {"cells": total, "covering_s": seconds, "covering_complete": complete}


def build_codes(cfg: ContinentBenchConfig, out: Path) -> dict:
    """Stream synthetic aerial/proto codes for ``out/cells.npy`` to float16 memmaps."""
    cells = np.load(out / "cells.npy", mmap_mode="r")
    start = time.perf_counter()
    write_codes(cells, out, CodeGenerator(cfg.codes))
    return {
        "codes_s": time.perf_counter() - start,
        "database_bytes": 2 * cells.size * cfg.codes.dim * 2,
    }


def _index_path(out: Path, variant: str) -> Path:
    """``out/index.faiss`` (current defaults) or ``out/baseline/index.faiss``."""
    return out / "index.faiss" if variant == "index" else out / variant / "index.faiss"


def build_index(cfg: ContinentBenchConfig, out: Path, variant: str = "index") -> dict:
    """Build the compressed index over the memmaps and save it (``_index_path``)."""
    from geocells.search.ivfpq import CellSearcher, IVFPQParams
    from geocells.search.ivfpq_build import sqrt_nprobe
    from geocells.search.refine import refine_path

    aerial, proto = _open_codes(out)
    path = _index_path(out, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {"nlist": cfg.nlist, "pq_m": cfg.pq_m, "coarse": cfg.coarse,
              "layout": cfg.layout, "seed": cfg.seed}  # fmt: skip
    if variant == "baseline":
        params.update(BASELINE_PARAMS, pq_m=cfg.pq_m or aerial.shape[1] // 2)
        resolved = IVFPQParams(**params).resolved(*aerial.shape)
        if resolved.coarse == "hnsw":  # the nprobe of the time, not today's share of lists
            params["nprobe"] = sqrt_nprobe(resolved.nlist)
    gc.collect()
    anon_before = memory_status()["RssAnon"]
    reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    with PeakSampler() as sampler:
        searcher = CellSearcher.build(
            aerial, proto, cfg.kappa, backend="ivfpq", progress=True,
            refine_file=refine_path(path), **params,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    searcher.save(path)
    refine_file = refine_path(path)
    gc.collect()
    index_bytes = searcher.memory_bytes()
    return {
        "build_s": seconds,
        "build_cpu_s": time.process_time() - cpu_start,
        "build_peak_rss_bytes": memory_status()["VmHWM"],
        "build_peak_anon_bytes": sampler.peak_anon,
        "index_bytes": index_bytes,
        "index_anon_growth_bytes": memory_status()["RssAnon"] - anon_before,
        "refine_file_bytes": refine_file.stat().st_size if refine_file.is_file() else 0,
        "params": dataclasses.asdict(searcher.params),
    }


def _open_codes(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The two float16 code memmaps of the benchmark database."""
    return np.load(out / "aerial.npy", mmap_mode="r"), np.load(out / "proto.npy", mmap_mode="r")


def measure_exact(cfg: ContinentBenchConfig, out: Path, queries: np.ndarray) -> dict:
    """Exact chunked search of the queries: rows, time, memory (cached in ``out``).

    The result only depends on the database and the queries, so a rerun with other
    compressed-search settings reuses ``exact.json`` + ``exact_rows.npy``.
    """
    from geocells.scoring.exact import exact_search

    aerial, proto = _open_codes(out)
    key = {**_stage_key(cfg, "codes"), "kappa": cfg.kappa, "top_k": cfg.top_k,
           "exact_single": cfg.exact_single, "queries": _digest(queries)}  # fmt: skip
    record_path, rows_path = out / "exact.json", out / "exact_rows.npy"
    if record_path.is_file() and rows_path.is_file():
        record = json.loads(record_path.read_text())
        if record["key"] == key:
            logger.info("exact search: reusing the measurement in %s", record_path)
            return {**record["results"], "rows": np.load(rows_path)}
    gc.collect()
    reset_peak()
    with PeakSampler() as peak:
        start, cpu_start = time.perf_counter(), time.process_time()
        _, rows = exact_search(
            queries, aerial=aerial, proto=proto, kappa=cfg.kappa, top_k=cfg.top_k
        )
        batch_ms = 1000 * (time.perf_counter() - start) / len(queries)
        batch_cpu_ms = 1000 * (time.process_time() - cpu_start) / len(queries)

        def single(batch, top_k):
            return exact_search(batch, aerial=aerial, proto=proto, kappa=cfg.kappa, top_k=top_k)

        _, single_ms, _ = timed_single(single, queries[: cfg.exact_single], cfg.top_k)
    results = {
        "exact_ms_batch_all": batch_ms,
        "exact_cpu_ms_batch_all": batch_cpu_ms,
        "exact_ms_batch1_mean": float(np.mean(single_ms)),
        "exact_peak_anon_bytes": peak.peak_anon,
        "exact_peak_rss_bytes": memory_status()["VmHWM"],
        "exact_measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    np.save(rows_path, rows)
    record_path.write_text(json.dumps({"key": key, "results": results}, indent=2))
    return {**results, "rows": rows}


def _digest(array: np.ndarray) -> str:
    """Short content hash of an array (cache keys)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _agreement(rows: np.ndarray, batch_rows: np.ndarray, exact_rows, targets) -> dict:
    """Top-1 agreement of compressed rows with the exact search's."""
    return {
        "top1_agreement": float(np.mean(rows[:, 0] == exact_rows[:, 0])),
        "top1_agreement_batch64": float(np.mean(batch_rows[:, 0] == exact_rows[:, 0])),
        "exact_top1_in_ann_topk": float(np.mean((rows == exact_rows[:, :1]).any(axis=1))),
        "ann_top1_is_target": float(np.mean(rows[:, 0] == targets)),
    }


def measure_search(cfg: ContinentBenchConfig, out: Path) -> dict:
    """Compressed and exact search on the same queries: speed, memory, agreement.

    -> {"search": the current defaults (with the exact search's numbers and the sweep),
    "baseline": the pre-issue-23 defaults, when built}.
    """
    from geocells.bench.coldstart import measure_cold_start
    from geocells.bench.sweep import measure_sweep
    from geocells.search.ivfpq import CellSearcher
    from geocells.search.refine import refine_path

    aerial, proto = _open_codes(out)
    queries, targets = make_queries(aerial, proto, cfg.queries, cfg.query_noise, cfg.seed + 1)
    variants = ["index", "baseline"] if cfg.baseline else ["index"]
    cold = []
    index_path = _index_path(out, "index")
    if cfg.cold_start and refine_path(index_path).is_file():
        first = queries[: cfg.cold_queries]
        cold = measure_cold_start(
            index_path, aerial, proto, cfg.kappa, first, cfg.top_k, cfg.cold_start
        )
    searchers, loaded, load_s = {}, {}, {}
    for variant in variants:  # resident memory: anonymous RSS growth while loading
        gc.collect()
        anon_before = memory_status()["RssAnon"]
        start = time.perf_counter()
        searcher = CellSearcher.load(_index_path(out, variant), aerial, proto, cfg.kappa)
        load_s[variant] = time.perf_counter() - start
        loaded[variant] = memory_status()["RssAnon"] - anon_before
        if variant == "index":  # the sweep settings apply to the current defaults only
            searcher.params = dataclasses.replace(
                searcher.params, nprobe=cfg.nprobe or searcher.params.nprobe,
                rerank=cfg.rerank or searcher.params.rerank,
            )  # fmt: skip
        searchers[variant] = searcher
    reset_peak()
    with PeakSampler() as ann_peak:
        single = side_by_side(searchers, queries, cfg.top_k)
        batch = {name: batch64(searchers[name], queries, cfg.top_k) for name in variants}
    ann_hwm = memory_status()["VmHWM"]
    exact = measure_exact(cfg, out, queries)
    exact_rows = exact.pop("rows")
    found = {}
    for name in variants:
        searcher, rows = searchers[name], single[name].pop("rows")
        batch_rows, batch_timing = batch[name]
        found[name] = {
            "queries": len(queries),
            "nprobe": searcher.params.nprobe,
            "rerank": searcher.params.rerank,
            "params": dataclasses.asdict(searcher.params),
            "index_loaded_anon_bytes": loaded[name],
            "index_load_s": load_s[name],
            "index_memory_bytes": searcher.memory_bytes(),
            **single[name],
            **batch_timing,
            **_agreement(rows, batch_rows, exact_rows, targets),
            "resident_bytes_per_cell": max(loaded[name], searcher.memory_bytes()) / len(aerial),
        }
        logger.info("%s: %.2f ms/query (batch 1), agreement %.4f", name,
                    found[name]["ann_ms_batch1_mean"], found[name]["top1_agreement"])  # fmt: skip
    sweep = measure_sweep(searchers["index"], cfg.sweep, queries, exact_rows, cfg.top_k)
    for row in cold:
        cold_rows = row.pop("rows")
        row["top1_agreement"] = float(np.mean(cold_rows[:, 0] == exact_rows[: len(cold_rows), 0]))
    search = {
        **found["index"],
        "cold_start": cold,
        "ann_peak_anon_bytes": ann_peak.peak_anon,
        "ann_peak_rss_bytes": ann_hwm,
        **exact,
        "exact_top1_is_target": float(np.mean(exact_rows[:, 0] == targets)),
        "sweep": sweep,
    }
    return {"search": search, **({"baseline": found["baseline"]} if cfg.baseline else {})}


def run(cfg: ContinentBenchConfig, out: Path, *, overwrite: bool = False) -> Path:
    """Run (or resume) the benchmark in ``out``; returns the path of ``results.json``."""
    import faiss

    from geocells.bench.sweep import parse_setting
    from geocells.search.refine import check_warm_mode

    if cfg.queries < 1 or cfg.top_k < 1 or cfg.threads < 1 or cfg.cold_queries < 1:
        raise ValueError("queries, top_k, threads and cold_queries must be >= 1")
    for mode in cfg.cold_start:
        check_warm_mode(mode)
    for setting in cfg.sweep:
        parse_setting(setting)
    out.mkdir(parents=True, exist_ok=True)
    faiss.omp_set_num_threads(cfg.threads)
    stages = _Stages(out, overwrite)
    results: dict = {"config": dataclasses.asdict(cfg), "load_before": os.getloadavg()}
    stages_run = [("cells", cover_cells), ("codes", build_codes), ("index", build_index)]
    if cfg.baseline:
        stages_run.append(("baseline", lambda cfg, out: build_index(cfg, out, "baseline")))
    for name, stage in stages_run:
        key = _stage_key(cfg, name)
        done = stages.finished(name, key)
        if done is None:
            logger.info("stage %s: running", name)
            done = stage(cfg, out)
            stages.record(name, key, done)
        else:
            logger.info("stage %s: reusing the finished output in %s", name, out)
        results[name] = done
    measured = measure_search(cfg, out)
    results["search"] = measured["search"]
    if "baseline" in measured:
        results["baseline_search"] = measured["baseline"]
    results["load_after"] = os.getloadavg()
    results["cpu_count"] = os.cpu_count()
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    return path
