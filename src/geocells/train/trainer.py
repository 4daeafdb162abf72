"""``geocells train``: the training loop, top to bottom.

run(cfg, dataset, out) builds the model over the region's level-Lp cells, plans each
epoch's batches from (seed, epoch), trains with AdamW (encoders) + a sparse optimiser
(prototypes), validates at every epoch end, checkpoints every ``checkpoint_every`` steps
and on Ctrl-C, and resumes exactly from ``checkpoints/last.*``.
"""

from __future__ import annotations

import logging
import shutil
import signal
import time
from pathlib import Path

import torch

from geocells.config import ConfigError, config_to_dict, load_config, save_config
from geocells.io import RunInfo, dataset_fingerprint
from geocells.models.geomodel import GeoModel, build_model
from geocells.train.checkpoint import load_checkpoint, save_checkpoint
from geocells.train.config import ExperimentConfig, check_config
from geocells.train.distributed import (
    DistInfo,
    broadcast_from_main,
    init_distributed,
    shutdown_distributed,
)
from geocells.train.metrics import MetricsLog
from geocells.train.optim import encoder_optimizer, lr_factor, prototype_optimizer, set_lr
from geocells.train.sampling import BatchLoader, TrainPool, plan_epoch
from geocells.train.step import Encoders, train_step
from geocells.train.validate import ValSet, validate

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved at ``checkpoint``."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted; checkpoint: {checkpoint}")
        self.checkpoint = checkpoint


def _device(cfg: ExperimentConfig) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(
        "cuda" if want == "auto" and torch.cuda.is_available() else want.replace("auto", "cpu")
    )


def _prepare_run_dir(
    out: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool
) -> ExperimentConfig:
    """Create/clean the run folder; on resume the saved config must match ``cfg``."""
    config_path = out / "config.yaml"
    if resume:
        saved = load_config(ExperimentConfig, config_path)
        changed = [
            f"{group}.{key}"
            for group, values in config_to_dict(cfg).items()
            if group not in ("train", "refit")
            for key, value in values.items()
            if config_to_dict(saved)[group][key] != value
        ]
        if changed:
            raise ConfigError(f"--resume with a config that differs from {config_path}: {changed}")
        return cfg
    if (out / "checkpoints").exists() or config_path.exists():
        if not overwrite:
            raise ValueError(f"run folder {out} already holds a run; use --resume or --overwrite")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for name in ("config.yaml", "metrics.csv", "loss.png"):
            (out / name).unlink(missing_ok=True)
    return cfg


def _total_steps(cfg: ExperimentConfig, steps_per_epoch: int) -> int:
    total = cfg.train.epochs * steps_per_epoch
    return min(total, cfg.train.max_steps) if cfg.train.max_steps > 0 else total


def _loader(pool, plan, dataset, model: GeoModel, cfg, start: int, info: DistInfo):
    """DataLoader over this rank's batches of ``plan`` from index ``start``."""
    mine = plan[info.rank :: info.world_size][start:]
    batches = BatchLoader(pool, mine, dataset, (model.ground.input_size, model.aerial_px), cfg)
    workers = cfg.data.workers
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        worker_init_fn=_ignore_sigint if workers else None,
    )


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process (which saves a checkpoint)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def run(
    cfg: ExperimentConfig,
    dataset_root: Path,
    out: Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train a GeoModel on ``dataset_root``; returns ``out`` (the run folder)."""
    from geocells.data.dataset import Dataset
    from geocells.geo.cover import region_cells

    cfg = check_config(cfg)
    out = Path(out)
    device = _device(cfg)
    info = init_distributed(device.type)
    try:
        if info.is_main:
            cfg = _prepare_run_dir(out, cfg, resume, overwrite)
            save_config(cfg, out / "config.yaml")
            root = Path(dataset_root).expanduser().resolve()
            RunInfo(dataset=str(root), dataset_sha256=dataset_fingerprint(root)).save(out)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        dataset = Dataset.open(dataset_root)
        cells = region_cells(dataset.region, cfg.data.prototype_level, land_only=cfg.data.land_only)
        logger.info("%d prototype cells at level %d", len(cells), cfg.data.prototype_level)
        model = build_model(cfg, cells).to(device)
        _train(cfg, dataset, model, out, resume, device, info, progress)
        if cfg.refit.enabled and info.is_main:
            from geocells.train import refit_stage

            refit_stage.run(out, dataset_root, cfg.refit, progress=progress)
        return out
    finally:
        shutdown_distributed(info)


def _train(cfg, dataset, model: GeoModel, out: Path, resume: bool, device, info, progress) -> Path:
    """The loop proper (model built, run folder ready)."""
    from tqdm import tqdm

    pool = TrainPool.build(dataset, model.prototypes, cfg)
    preload = getattr(dataset.aerial, "preload", None)
    if preload is not None and cfg.data.workers > 0:
        preload()  # read the raster once before workers fork, so they share it
    encoders = Encoders(model)
    optimizers = {
        "encoders": encoder_optimizer([encoders], cfg.optim),
        "prototypes": prototype_optimizer(model.prototypes.embedding, cfg.optim),
    }
    base_lrs = [cfg.optim.lr, cfg.optim.prototype_lr]
    position = {"step": 0, "epoch": 0, "batch": 0, "elapsed_s": 0.0}
    folder = out / "checkpoints"
    if resume:
        position = load_checkpoint(folder, model, optimizers)
        logger.info("resuming at step %d (epoch %d)", position["step"], position["epoch"])
    if info.enabled:
        broadcast_from_main(model.prototypes.embedding.weight, info)
        encoders = torch.nn.parallel.DistributedDataParallel(
            encoders, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    steps_per_epoch = len(plan_epoch(pool, model.prototypes, cfg, 0)) // info.world_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(pool)} train images give no full batch of {cfg.train.batch_size} distinct "
            "cells per process; lower train.batch_size"
        )
    total = _total_steps(cfg, steps_per_epoch)
    metrics = MetricsLog(
        out, info.is_main, position["step"] if resume else None, cfg.train.log_every
    )
    val = None
    if info.is_main:
        val = ValSet.build(
            dataset, model, cfg.train.val_max_queries, cfg.train.val_max_cells, cfg.train.seed
        )
    budget_s = cfg.train.max_minutes * 60.0
    started = time.monotonic() - position["elapsed_s"]
    generator = torch.Generator()
    bar = tqdm(
        total=total, initial=position["step"], disable=not (progress and info.is_main), unit="step"
    )
    step = position["step"]
    last_saved = None

    def save(epoch: int, batch: int) -> Path | None:
        if not info.is_main:
            return None
        where = {
            "step": step,
            "epoch": epoch,
            "batch": batch,
            "elapsed_s": time.monotonic() - started,
        }
        return save_checkpoint(folder, model, optimizers, where, cfg.train.keep_checkpoints)

    epoch, batch_index = position["epoch"], position["batch"]
    validated_at = -1
    try:
        while epoch < cfg.train.epochs and step < total:
            plan = plan_epoch(pool, model.prototypes, cfg, epoch)
            loader = _loader(
                pool,
                plan[: steps_per_epoch * info.world_size],
                dataset,
                model,
                cfg,
                batch_index,
                info,
            )
            last_tick = time.monotonic()
            for batch in loader:
                if len(batch["ground"]) == 0:
                    raise ValueError(
                        f"every sample of batch {batch_index} (epoch {epoch}) is unusable"
                    )
                tick = time.monotonic()
                factor = lr_factor(step, total, cfg.optim)
                if budget_s > 0:
                    factor = min(
                        factor,
                        lr_factor(int(total * (tick - started) / budget_s), total, cfg.optim),
                    )
                set_lr(list(optimizers.values()), base_lrs, factor)
                generator.manual_seed(cfg.train.seed * 1_000_003 + step)
                logs = train_step(model, encoders, optimizers, batch, cfg, generator, device, info)
                step += 1
                batch_index += 1
                samples = (len(batch["ground"]) + len(batch["aerial"])) * info.world_size
                now = time.monotonic()  # wall time per step, waiting for data included
                seconds, waited, last_tick = now - last_tick, tick - last_tick, now
                logs["data_wait_s"] = waited
                lr = factor * cfg.optim.lr
                metrics.train(step, epoch, logs, lr, samples, seconds, batch["skipped"])
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}", sps=f"{metrics.samples_per_s:.1f}")
                out_of_time = budget_s > 0 and _all_agree(
                    time.monotonic() - started > budget_s - metrics.last_val_s, info, device
                )
                if step % cfg.train.checkpoint_every == 0 or step >= total or out_of_time:
                    last_saved = save(epoch, batch_index)
                if step >= total or out_of_time:
                    break
            else:
                epoch, batch_index = epoch + 1, 0
                last_saved = save(epoch, batch_index)
                validated_at = _validate(model, val, device, metrics, step, epoch - 1, info)
                continue
            break
        if validated_at != step:
            _validate(model, val, device, metrics, step, epoch, info)
    except KeyboardInterrupt:
        bar.close()
        saved = save(epoch, batch_index)
        metrics.plot()
        raise TrainingInterrupted(saved) from None
    bar.close()
    metrics.plot()
    if last_saved is None and info.is_main:
        save(epoch, batch_index)
    return out


def _all_agree(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is true on any (ranks must stop at the same step)."""
    if not info.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def _validate(
    model, val, device, metrics: MetricsLog, step: int, epoch: int, info: DistInfo
) -> int:
    """Rank 0 validates; other ranks wait for it. Returns ``step``."""
    if info.is_main and val is not None:
        tick = time.monotonic()
        results = validate(model, val, device)
        metrics.val(step, epoch, results, time.monotonic() - tick)
        logger.info(
            "step %d: val R@1(100 m) aerial %.3f, prototype %.3f, hybrid %.3f (%d queries; "
            "median rank of the true cell %.0f of %d)",
            step,
            results["val_aerial_r100"],
            results["val_prototype_r100"],
            results["val_hybrid_r100"],
            int(results["val_queries"]),
            results["val_aerial_median_rank"],
            int(results["val_gallery"]),
        )
    if info.enabled:
        torch.distributed.barrier()
    return step
