"""Prototype-table training steps at continent scale: memory per prototype and step time.

Uses the real training pieces — ``PrototypeTable``, ``candidate_rows`` (positives, S2
neighbour rings, random negatives), ``prototype_loss`` and ``prototype_optimizer`` — on a
table of every level-``Lp`` cell of a region. The encoders are left out: their cost does
not depend on the number of prototypes, so the anchors are random unit vectors standing in
for one batch of ground and aerial embeddings.

Two storages of the weights: ``ram`` (the table as the trainer builds it) and ``disk``
(the float32 weights in a file-backed memmap, so only touched rows occupy memory).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geocells.bench.memory import PeakSampler, memory_status, reset_peak

logger = logging.getLogger(__name__)

STORAGES = ("ram", "disk")


@dataclass
class PrototypeBenchConfig:
    """One prototype-step measurement."""

    region: str = "bedenl"
    level: int = 15
    max_prototypes: int = 0  # 0: every cell of the region at ``level``
    dim: int = 256
    storage: str = "ram"  # "ram" or "disk"
    optimizer: str = "row_adagrad"  # or "sparse_adam" (2 float32 moments per weight)
    dtype: str = "float32"  # weights in RAM: float32, bfloat16 or float16 (ram storage only)
    batch_size: int = 32  # ground/aerial pairs per step
    steps: int = 20
    warmup_steps: int = 3
    threads: int = 2
    memory_margin_gib: float = 3.0  # refuse a run that would leave less RAM than this free
    seed: int = 0


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable line")


def expected_bytes(cfg: PrototypeBenchConfig, count: int) -> int:
    """RAM the table and its optimizer state should take (ids + weights + state)."""
    weights = 0 if cfg.storage == "disk" else _weight_bytes(cfg.dtype) * cfg.dim
    state = 8 * cfg.dim if cfg.optimizer == "sparse_adam" else 4
    return count * (8 + weights + state)


def _weight_bytes(dtype: str) -> int:
    """Bytes per weight of a table dtype name (ValueError for unknown names)."""
    from geocells.models.prototypes import table_dtype

    return table_dtype(dtype).itemsize


def region_prototype_cells(cfg: PrototypeBenchConfig) -> np.ndarray:
    """Sorted level-``cfg.level`` cells of the region (capped at ``max_prototypes``)."""
    from geocells.geo import Region, cover_region

    chunks, total = [], 0
    for chunk in cover_region(Region.parse(cfg.region), cfg.level, land_only=True):
        chunks.append(chunk)
        total += chunk.size
        if cfg.max_prototypes and total >= cfg.max_prototypes:
            break
    cells = np.concatenate(chunks)
    return cells[: cfg.max_prototypes] if cfg.max_prototypes else cells


def build_table(cfg: PrototypeBenchConfig, cells: np.ndarray, workdir: Path):
    """The PrototypeTable; with ``disk`` storage its weights live in ``workdir``."""
    import torch
    from torch import nn

    from geocells.models.prototypes import PrototypeTable

    if cfg.storage == "ram":
        return PrototypeTable(cells, cfg.level, cfg.dim, dtype=cfg.dtype)
    if cfg.dtype != "float32":
        raise ValueError(f"disk storage keeps float32 weights; dtype {cfg.dtype!r} is ram-only")
    with torch.device("meta"):  # no P x D allocation; the weights come from the file
        table = PrototypeTable(cells, cfg.level, cfg.dim)
    table.cell_ids = torch.from_numpy(cells.view(np.int64).copy())
    path = workdir / f"prototypes-L{cfg.level}-{len(cells)}.f32"
    weights = np.memmap(path, np.float32, "w+", shape=(len(cells), cfg.dim))
    rng = np.random.default_rng(cfg.seed)
    for start in range(0, len(cells), 1 << 16):
        block = weights[start : start + (1 << 16)]
        block[:] = rng.standard_normal(block.shape, dtype=np.float32)
    weights.flush()
    table.embedding.weight = nn.Parameter(torch.from_numpy(weights))
    return table


def _one_step(table, optimizer, cfg, generator, params, loss_cfg) -> int:
    """One prototype-side step on random anchors; returns the number of rows touched."""
    import torch
    import torch.nn.functional as F

    from geocells.train.loss import prototype_loss
    from geocells.train.negatives import candidate_rows

    anchors = F.normalize(torch.randn(2 * cfg.batch_size, cfg.dim, generator=generator), dim=1)
    anchors.requires_grad_(True)
    anchor_rows = torch.randint(len(table), (2 * cfg.batch_size,), generator=generator)
    rows = candidate_rows(anchors, anchor_rows, table, params, loss_cfg, generator)
    prototypes = table(rows)
    half = cfg.batch_size
    loss = prototype_loss(anchors[:half], anchor_rows[:half], prototypes, rows, params)
    loss = loss + prototype_loss(anchors[half:], anchor_rows[half:], prototypes, rows, params)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return len(rows)


def run(cfg: PrototypeBenchConfig, workdir: Path) -> dict:
    """Measure one configuration; returns a dict of results (or why it was not run)."""
    import torch

    from geocells.train.config import LossConfig, OptimConfig
    from geocells.train.loss import MSParams
    from geocells.train.optim import prototype_optimizer

    if cfg.storage not in STORAGES:
        raise ValueError(f"unknown storage {cfg.storage!r}; expected one of {STORAGES}")
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    cells = region_prototype_cells(cfg)
    result = {"config": dataclasses.asdict(cfg), "prototypes": len(cells)}
    result["covering_s"] = time.perf_counter() - start
    need = expected_bytes(cfg, len(cells))
    free = available_memory()
    result.update(expected_bytes=need, available_bytes_before=free)
    workdir.mkdir(parents=True, exist_ok=True)
    margin = cfg.memory_margin_gib * 1024**3
    file_bytes = 4 * cfg.dim * len(cells) if cfg.storage == "disk" else 0
    disk_free = shutil.disk_usage(workdir).free
    if need > free - margin:
        result["skipped"] = (
            f"needs ~{need / 1024**3:.1f} GiB RAM, {free / 1024**3:.1f} GiB available on this "
            f"shared machine (margin {cfg.memory_margin_gib} GiB)"
        )
    elif file_bytes > disk_free - 3 * margin:
        result["skipped"] = (
            f"needs a {file_bytes / 1024**3:.1f} GiB weight file, "
            f"{disk_free / 1024**3:.1f} GiB free on disk"
        )
    if "skipped" in result:
        logger.warning("skipping %s: %s", cfg, result["skipped"])
        return result
    gc.collect()
    anon_before = memory_status()["RssAnon"]
    reset_peak()
    with PeakSampler() as sampler:
        start = time.perf_counter()
        table = build_table(cfg, cells, workdir)
        result["table_build_s"] = time.perf_counter() - start
        optim_cfg = dataclasses.replace(OptimConfig(), prototype_optimizer=cfg.optimizer)
        optimizer = prototype_optimizer(table.embedding, optim_cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        loss_cfg = LossConfig()
        params = MSParams(loss_cfg.alpha, loss_cfg.beta, loss_cfg.base, loss_cfg.mining_margin)
        times, cpu_times, touched = [], [], []
        for step in range(cfg.warmup_steps + cfg.steps):
            step_start, cpu_start = time.perf_counter(), time.process_time()
            touched.append(_one_step(table, optimizer, cfg, generator, params, loss_cfg))
            if step >= cfg.warmup_steps:
                times.append(time.perf_counter() - step_start)
                cpu_times.append(time.process_time() - cpu_start)
    status = memory_status()
    # Steady state after the steps: table (ram) + optimizer state, without transient buffers.
    anon_growth = status["RssAnon"] - anon_before
    result.update(
        step_ms_mean=1000 * float(np.mean(times)),
        step_ms_p50=1000 * float(np.median(times)),
        step_cpu_ms=1000 * float(np.mean(cpu_times)),  # all threads; the idle-machine cost
        rows_touched_per_step=float(np.mean(touched)),
        peak_rss_bytes=status["VmHWM"],
        peak_anon_bytes=sampler.peak_anon,
        anon_bytes_per_prototype=anon_growth / len(cells),
    )
    del table, optimizer
    gc.collect()
    if cfg.storage == "disk":
        for path in workdir.glob(f"prototypes-L{cfg.level}-*.f32"):
            path.unlink()
    return result
