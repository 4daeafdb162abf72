"""Where a run's batches come from: images read and cropped on line, or the trunk cache.

``BatchSource.plan(epoch)`` is the epoch's batches (a pure function of the config and the
epoch, as ``sampling.plan_epoch``); ``loader(plan, start)`` the DataLoader over them.
Cached batches (``cache.enabled``) pick, per sample, one of the cached ground views and
one of the cached aerial tiles at random, and ``data.aerial_only_per_batch`` of the cached
aerial-only tiles; they hold float16 trunk outputs instead of pixels (``"cached": True``).
"""

from __future__ import annotations

import signal

import numpy as np
import torch

from geocells.train.features import TrunkCache
from geocells.train.sampling import BatchLoader, TrainPool, distinct_cell_batches, plan_epoch
from geocells.train.state import loader_generator


def _pick(ok: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random True column per row of ``ok`` [N, V] (rows have at least one)."""
    scores = rng.random(ok.shape)
    scores[~ok] = -1.0
    return scores.argmax(axis=1)


def plan_cached_epoch(pool: TrainPool, cache: TrunkCache, cfg, epoch: int) -> list[dict]:
    """Every batch of one epoch over the cache: image indices and the views they use."""
    rng = np.random.default_rng([cfg.train.seed, epoch])
    usable = np.flatnonzero(cache.ground_ok.any(axis=1) & cache.aerial_ok.any(axis=1))
    extra = np.flatnonzero(cache.extra_ok)
    plan = []
    for batch in distinct_cell_batches(pool.cells[usable], cfg.train.batch_size, rng):
        indices = usable[batch]
        count = min(cfg.data.aerial_only_per_batch, len(extra))
        plan.append(
            {
                "ground": indices,
                "ground_view": _pick(cache.ground_ok[indices], rng),
                "aerial_view": _pick(cache.aerial_ok[indices], rng),
                "extra": rng.choice(extra, size=count) if count else np.zeros(0, np.int64),
            }
        )
    return plan


class CachedBatchLoader(torch.utils.data.Dataset):
    """Map-style dataset over planned cached batches (keys as ``BatchLoader``'s, with
    float16 trunk outputs in ``ground`` [B, *shape] and ``aerial`` [B + E, *shape])."""

    def __init__(self, pool: TrainPool, plan: list, cache_folder) -> None:
        self.pool, self.plan, self.folder = pool, plan, cache_folder
        self.cache: TrunkCache | None = None  # opened in the worker that reads

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict:
        if self.cache is None:
            self.cache = TrunkCache.open(self.folder)
        cache, spec, pool = self.cache, self.plan[i], self.pool
        indices, extra = spec["ground"], spec["extra"]
        ground = cache.ground[indices, spec["ground_view"]]
        aerial = np.concatenate([cache.aerial[indices, spec["aerial_view"]], cache.extra[extra]])
        as_int64 = lambda cells: torch.from_numpy(np.asarray(cells, np.uint64).view(np.int64))  # noqa: E731
        return {
            "cached": True,
            "ground": torch.from_numpy(np.ascontiguousarray(ground)),
            "aerial": torch.from_numpy(np.ascontiguousarray(aerial)),
            "ground_cells": as_int64(pool.cells[indices]),
            "aerial_cells": as_int64(
                np.concatenate([pool.cells[indices], cache.extra_cells[extra]])
            ),
            "ground_rows": torch.from_numpy(pool.rows[indices]),
            "aerial_rows": torch.from_numpy(
                np.concatenate([pool.rows[indices], cache.extra_rows[extra]])
            ),
            "skipped": 0,
        }


class BatchSource:
    """The epoch plans and loaders of a run (on-line pixels, or the trunk cache)."""

    def __init__(self, pool: TrainPool, dataset, model, cfg, cache: TrunkCache | None) -> None:
        self.pool, self.dataset, self.model, self.cfg, self.cache = pool, dataset, model, cfg, cache

    def plan(self, epoch: int) -> list[dict]:
        """The batches of ``epoch``."""
        if self.cache is not None:
            return plan_cached_epoch(self.pool, self.cache, self.cfg, epoch)
        return plan_epoch(self.pool, self.model.prototypes, self.cfg, epoch)

    def loader(self, plan: list, epoch: int, start: int, rank: int, world_size: int):
        """DataLoader over this rank's batches of ``plan`` (of ``epoch``) from index ``start``."""
        mine = plan[rank::world_size][start:]
        if self.cache is not None:
            batches = CachedBatchLoader(self.pool, mine, self.cache.folder)
        else:
            sizes = (self.model.ground.input_size, self.model.aerial_px)
            batches = BatchLoader(self.pool, mine, self.dataset, sizes, self.cfg)
        workers = self.cfg.data.workers
        return torch.utils.data.DataLoader(
            batches,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            worker_init_fn=_ignore_sigint if workers else None,
            generator=loader_generator(self.cfg.train.seed, epoch),  # not the global RNG: resumes
        )


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process (which saves a checkpoint)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
