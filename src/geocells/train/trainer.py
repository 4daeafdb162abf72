"""``geocells train``: the training loop, top to bottom.

run(cfg, dataset, out) builds the model over the region's level-Lp cells, plans each
epoch's batches from (seed, epoch), trains with AdamW (encoders) + a sparse optimiser
(prototypes), validates at every epoch end, checkpoints every ``checkpoint_every`` steps
and on Ctrl-C (a flag checked between steps, so a checkpoint never holds half a step),
and resumes exactly from the newest intact checkpoint (``train.checkpoint``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from geocells.config import ConfigError, config_yaml
from geocells.data.dataset import Dataset
from geocells.io import RunInfo
from geocells.models.geomodel import GeoModel, build_model
from geocells.outputs import OutputFolder, OutputKind, stage_output
from geocells.train.batches import BatchSource
from geocells.train.checkpoint import (
    CHECKPOINTS,
    checkpoint_stems,
    load_checkpoint,
    save_checkpoint,
)
from geocells.train.config import (
    ExperimentConfig,
    check_config,
    experiment_config,
    resume_changes,
)
from geocells.train.distributed import (
    DistInfo,
    broadcast_from_main,
    init_distributed,
    shutdown_distributed,
)
from geocells.train.metrics import MetricsLog
from geocells.train.optim import encoder_optimizer, lr_factor, prototype_optimizer, set_lr
from geocells.train.sampling import TrainPool
from geocells.train.state import StopRequest, TrainState
from geocells.train.step import Encoders, train_step
from geocells.train.validate import ValSet, validate

logger = logging.getLogger(__name__)

# What `train` writes at the top of a run folder (--overwrite clears these, nothing else).
RUN_OUTPUT = OutputKind(
    stage="train",
    known=("config.yaml", "run.json", "checkpoints", "metrics.csv", "loss.png", "features"),
    signature=("config.yaml", "checkpoints"),
)


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


def _run_dir_check(cfg: ExperimentConfig, resume: bool):
    """``stage_output``'s check of a run folder: on resume the saved config must match
    ``cfg``; without resume a folder holding a run is refused (``--resume`` or
    ``--overwrite``). A run is never "finished": it resumes instead."""

    def check(out: Path) -> bool:
        config_path = out / "config.yaml"
        if resume:
            changed = resume_changes(experiment_config(resume_from=out), cfg)
            if changed:
                raise ConfigError(
                    f"--resume with a config that differs from {config_path}: {changed}"
                )
        elif (out / "checkpoints").exists() or config_path.exists():
            raise ValueError(f"run folder {out} already holds a run; use --resume or --overwrite")
        return False

    return check


def _check_resume_dataset(out: Path, root: Path, fingerprint: str) -> None:
    """``--resume`` trains on the dataset the run was made with (``run.json`` records it)."""
    if not (out / RunInfo.FILE).is_file():
        return  # a run older than run.json: nothing to compare with
    recorded = RunInfo.load(out)
    if recorded.dataset_sha256 and recorded.dataset_sha256 != fingerprint:
        raise ValueError(
            f"--resume: run {out} was trained on dataset {recorded.dataset}, and {root} is "
            "another dataset (its region.geojson, world.json or aerial files differ). "
            f"Resume on the run's own: geocells train {recorded.dataset} --out {out} --resume; "
            "or train this dataset into a new --out"
        )
    if recorded.dataset and recorded.dataset != str(root):
        logger.warning(
            "--resume: run %s was made on %s; %s has the same region and aerial files, "
            "resuming on it",
            out, recorded.dataset, root,
        )  # fmt: skip


def _total_steps(cfg: ExperimentConfig, steps_per_epoch: int) -> int:
    total = cfg.train.epochs * steps_per_epoch
    return min(total, cfg.train.max_steps) if cfg.train.max_steps > 0 else total


def run(
    cfg: ExperimentConfig,
    dataset_root: Dataset | str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train a GeoModel on ``dataset_root`` (a folder or an open ``Dataset``) into the run
    folder ``out``; returns ``out``.

    ``resume`` continues from ``out``'s last checkpoint (same config); ``overwrite``
    (without ``resume``) replaces the run there."""
    cfg = check_config(cfg)
    out = Path(out)
    device = _device(cfg)
    info = init_distributed(device.type)
    try:
        lock = contextlib.nullcontext()
        if info.is_main:  # resume wins over overwrite: nothing is cleared then
            check = _run_dir_check(cfg, resume)
            lock = stage_output(out, RUN_OUTPUT, overwrite=overwrite and not resume, finished=check)
        with lock as folder:  # None on the other processes: they write nothing
            return _run_locked(cfg, dataset_root, folder, out, resume, progress, device, info)
    finally:
        shutdown_distributed(info)


def _run_locked(
    cfg, dataset_root, run: OutputFolder | None, out: Path, resume, progress, device, info
) -> Path:
    """The body of ``run`` (the main process holds the run folder's lock and writes the
    run's files through ``run``)."""
    from geocells.geo.cover import region_cells

    dataset = Dataset.of(dataset_root)  # no dataset there: refused before config.yaml is written
    if info.is_main:
        if resume:
            _check_resume_dataset(out, dataset.root, dataset.fingerprint)
        run.write_text("config.yaml", config_yaml(cfg))
        run.save(RunInfo(dataset=str(dataset.root), dataset_sha256=dataset.fingerprint))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    cells = region_cells(dataset.region, cfg.data.prototype_level, land_only=cfg.data.land_only)
    logger.info("%d prototype cells at level %d", len(cells), cfg.data.prototype_level)
    model = build_model(cfg, cells).to(device)
    _train(cfg, dataset, model, run, out, resume, device, info, progress)
    if cfg.refit.enabled and info.is_main:
        from geocells.train import refit_stage

        refit_stage.run(cfg.refit, out, dataset, progress=progress, experiment=cfg, folder=run)
    return out


def _train(cfg, dataset, model: GeoModel, run, out: Path, resume: bool, device, info, progress):
    """The loop proper (model built, run folder ready; ``run`` None off the main process)."""
    from tqdm import tqdm

    pool = TrainPool.build(dataset, model.prototypes, cfg)
    preload = getattr(dataset.aerial, "preload", None)
    if preload is not None and (cfg.data.workers > 0 or cfg.cache.enabled):
        preload()  # read the raster once before workers fork, so they share it
    cache = _trunk_cache(cfg, dataset, model, pool, out, device, info, progress)
    source = BatchSource(pool, dataset, model, cfg, cache)
    encoders = Encoders(model)
    optimizers = {
        "encoders": encoder_optimizer([encoders], cfg.optim),
        "prototypes": prototype_optimizer(model.prototypes.embedding, cfg.optim),
    }
    folder = out / "checkpoints"
    state = TrainState()
    if resume:
        position = load_checkpoint(folder, model, optimizers)
        if position is None:  # e.g. the disk filled up before the first checkpoint
            logger.warning("no checkpoint in %s yet: the run starts again at step 0", folder)
        else:
            state = TrainState.from_dict(position)
            logger.info("resuming at step %d (epoch %d)", state.step, state.epoch)
    if info.enabled:
        broadcast_from_main(model.prototypes.embedding.weight, info)
        encoders = torch.nn.parallel.DistributedDataParallel(
            encoders, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    steps_per_epoch = len(source.plan(0)) // info.world_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(pool)} train images give no full batch of {cfg.train.batch_size} distinct "
            "cells per process; lower train.batch_size"
        )
    total = _total_steps(cfg, steps_per_epoch)
    metrics = MetricsLog(run, state.step if resume else None, cfg.train.log_every)
    val = None
    if info.is_main:
        val = ValSet.build(
            dataset, model, cfg.train.val_max_queries, cfg.train.val_max_cells, cfg.train.seed
        )
        if val is not None and cfg.cache.enabled:
            val.freeze_trunk(model, device, cfg.train.bf16)
    loop = _Loop(cfg, model, encoders, optimizers, run, state, total, metrics, device, info)
    show = progress and info.is_main
    bar = tqdm(total=total, initial=state.step, disable=None if show else True, unit="step")
    try:
        with StopRequest() as stop:
            finished = loop.run(source, steps_per_epoch, val, bar, stop)
    except KeyboardInterrupt:  # a second Ctrl-C: at once, the last whole checkpoint stays
        bar.close()
        metrics.plot()
        raise TrainingInterrupted(loop.last_saved) from None
    bar.close()
    metrics.plot()
    if not finished:
        raise TrainingInterrupted(loop.last_saved)
    return out


def _trunk_cache(cfg, dataset, model, pool, out: Path, device, info: DistInfo, progress: bool):
    """The run's trunk cache (``cache.enabled``; rank 0 builds it, the others wait), or None."""
    if not cfg.cache.enabled:
        return None
    from geocells.train import features

    if info.is_main:
        cache = features.build(cfg, dataset, model, pool, out, device, progress)
    if info.enabled:
        torch.distributed.barrier()
    return cache if info.is_main else features.TrunkCache.open(features.cache_folder(cfg, out))


class _Loop:
    """The training loop's state and its steps; ``run`` reads top to bottom."""

    def __init__(self, cfg, model, encoders, optimizers, run, state, total, metrics, device, info):
        self.cfg, self.model, self.encoders, self.optimizers = cfg, model, encoders, optimizers
        self.output, self.state, self.total, self.metrics = run, state, total, metrics
        self.device, self.info = device, info
        self.base_lrs = [cfg.optim.lr, cfg.optim.prototype_lr]
        self.budget_s = cfg.train.max_minutes * 60.0
        self.started = time.monotonic() - state.elapsed_s
        self.generator = torch.Generator()
        self.last_saved: Path | None = None

    def run(self, source: BatchSource, steps_per_epoch: int, val, bar, stop: StopRequest) -> bool:
        """Train to the end (True), or until Ctrl-C (False; a checkpoint of whole steps)."""
        state, cfg, info = self.state, self.cfg, self.info
        validated_at = -1
        while state.epoch < cfg.train.epochs and state.step < self.total:
            plan = source.plan(state.epoch)
            mine = plan[: steps_per_epoch * info.world_size]
            loader = source.loader(mine, state.epoch, state.batch, info.rank, info.world_size)
            outcome = self.epoch(loader, bar, stop)
            if outcome == "stop":
                self.save()
                return False
            if outcome == "done":
                break
            state.epoch, state.batch = state.epoch + 1, 0
            self.save()
            validated_at = _validate(self.model, val, self.device, self.metrics, state.step,
                                     state.epoch - 1, info)  # fmt: skip
        if validated_at != state.step:
            _validate(self.model, val, self.device, self.metrics, state.step, state.epoch, info)
        if self.last_saved is None:
            self.save()
        return True

    def epoch(self, loader, bar, stop: StopRequest) -> str:
        """Steps over ``loader``: "end" (epoch over), "done" (last step or out of time) or
        "stop" (Ctrl-C; checked between steps, never inside one)."""
        state, cfg = self.state, self.cfg
        last_tick = time.monotonic()
        for batch in loader:
            if len(batch["ground"]) == 0:
                raise ValueError(
                    f"every sample of batch {state.batch} (epoch {state.epoch}) is unusable"
                )
            tick = time.monotonic()
            logs, factor = self.step(batch, tick)
            now = time.monotonic()  # wall time per step, waiting for data included
            logs["data_wait_s"] = tick - last_tick
            self.log(batch, logs, factor, now - last_tick, bar)
            last_tick = now
            late = time.monotonic() - self.started > self.budget_s - self.metrics.last_val_s
            out_of_time = self.budget_s > 0 and _all_agree(late, self.info, self.device)
            if _all_agree(stop.requested, self.info, self.device):
                return "stop"
            finished = state.step >= self.total or out_of_time
            if state.step % cfg.train.checkpoint_every == 0 or finished:
                self.save()
            if finished:
                return "done"
        return "end"

    def step(self, batch, tick: float) -> tuple[dict, float]:
        """One optimiser step of both optimisers; -> (logs, learning-rate factor)."""
        cfg, state = self.cfg, self.state
        factor = lr_factor(state.step, self.total, cfg.optim)
        if self.budget_s > 0:  # a time budget: the schedule follows the time used
            used = int(self.total * (tick - self.started) / self.budget_s)
            factor = min(factor, lr_factor(used, self.total, cfg.optim))
        set_lr(list(self.optimizers.values()), self.base_lrs, factor)
        self.generator.manual_seed(cfg.train.seed * 1_000_003 + state.step)
        logs = train_step(self.model, self.encoders, self.optimizers, batch, cfg, self.generator,
                          self.device, self.info)  # fmt: skip
        state.step += 1
        state.batch += 1
        return logs, factor

    def log(self, batch, logs: dict, factor: float, seconds: float, bar) -> None:
        """Metrics row and progress bar of the step just done."""
        samples = (len(batch["ground"]) + len(batch["aerial"])) * self.info.world_size
        lr = factor * self.cfg.optim.lr
        self.metrics.train(self.state.step, self.state.epoch, logs, lr, samples, seconds,
                           batch["skipped"])  # fmt: skip
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.3f}", sps=f"{self.metrics.samples_per_s:.1f}")

    def save(self) -> None:
        """Checkpoint the present state (rank 0 only)."""
        if not self.info.is_main:
            return
        self.state.elapsed_s = time.monotonic() - self.started
        try:
            self.last_saved = save_checkpoint(
                self.output, self.model, self.optimizers, self.state.to_dict(),
                self.cfg.train.keep_checkpoints,
            )  # fmt: skip
        except OSError as err:  # a full disk: every file is atomic, the last checkpoint stays
            folder = self.output.path / CHECKPOINTS
            stems = checkpoint_stems(folder)
            kept = folder / f"{stems[0]}.safetensors" if stems else "none yet: step 0"
            raise OSError(
                err.errno,
                f"cannot write the checkpoint of step {self.state.step} in {folder} "
                f"({err.strerror or err}); once there is space, --resume continues from the "
                f"newest one written ({kept})",
            ) from err


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
