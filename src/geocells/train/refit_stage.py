"""``geocells refit``: the prototype refit stage over a run folder (maths in ``refit``).

run(run_dir) loads ``checkpoints/last.safetensors``, embeds the anchors (train ground
images, aerial tiles of level-Lc descendants of every prototype cell), refits the table
and writes ``checkpoints/refit.safetensors`` + ``refit.json`` through the run folder's
``OutputFolder``, under the run's lock (a refit beside a training run writing the same
folder is refused, naming its PID). It is skipped when a refit of the same
``last.safetensors`` with the same settings is already there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from geocells.config import config_to_dict
from geocells.data.aerial import OutOfCoverageError
from geocells.data.dataset import Dataset
from geocells.data.images import ImageLoadError, load_image
from geocells.geo import cell_children, cell_to_latlng, latlng_to_cell
from geocells.io import dataset_of_run, sha256_file
from geocells.models import load_model
from geocells.models.card import RefitRecord
from geocells.models.device import resolve_device
from geocells.models.embed import embed_items
from geocells.models.geomodel import GeoModel, write_model
from geocells.outputs import OutputFolder, stage_output
from geocells.train.config import ExperimentConfig, RefitConfig, experiment_from_card
from geocells.train.refit import REFIT_INFO, REFIT_WEIGHTS, SOURCE, Anchors, refit_table
from geocells.train.step import ms_params
from geocells.train.trainer import RUN_OUTPUT

logger = logging.getLogger(__name__)


def ground_anchors(
    model: GeoModel, dataset, cfg: RefitConfig, seed: int, embed: bool, progress: bool
) -> Anchors:
    """Train ground images in the table (at most ``cfg.max_ground``, drawn from ``seed``).

    ``embed=False`` returns only their rows (zero vectors): enough to tell covered rows.
    """

    table = model.prototypes
    manifest = dataset.manifest.split("train")
    rows, found = table.find_rows(latlng_to_cell(manifest.lat, manifest.lon, table.level))
    keep = np.flatnonzero(found)
    if 0 < cfg.max_ground < len(keep):
        keep = np.sort(np.random.default_rng(seed).choice(keep, cfg.max_ground, replace=False))
    if not embed:
        return Anchors(torch.zeros(len(keep), table.dim), torch.from_numpy(rows[keep]))

    def load(i):
        return np.asarray(load_image(manifest.path[i]))

    vectors, kept = _embed_in_batches(
        keep, load, model.ground, cfg.encode_batch_size, "ground", (ImageLoadError,), progress
    )
    if not kept:
        return Anchors.empty(table.dim)
    return Anchors(torch.from_numpy(vectors), torch.from_numpy(rows[kept]))


def aerial_cells(table, cell_level: int, per_row: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(level-Lc cells uint64 [N], their prototype rows int64 [N]): ``per_row`` descendants
    of every prototype cell, all of them when there are no more than that."""

    if per_row == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    cells, rows = [], []
    for start in range(0, len(table), 65_536):
        block = np.arange(start, min(start + 65_536, len(table)))
        children = cell_children(table.cells[block], cell_level)  # [B, 4**k]
        if children.shape[1] > per_row:
            pick = np.argsort(rng.random(children.shape), axis=1)[:, :per_row]
            children = np.take_along_axis(children, pick, axis=1)
        cells.append(children.ravel())
        rows.append(np.repeat(block, children.shape[1]))
    return np.concatenate(cells), np.concatenate(rows).astype(np.int64)


def aerial_anchors(model: GeoModel, dataset, cfg: RefitConfig, seed: int, progress: bool):
    """North-up tiles (the database's view) of level-Lc cells of every prototype row."""

    cells, rows = aerial_cells(model.prototypes, model.cell_level, cfg.aerial_per_row, seed)
    lat, lon = cell_to_latlng(cells)

    def load(i):
        return dataset.aerial.crop(lat[i], lon[i], model.aerial_tile_m, model.aerial_px)

    vectors, kept = _embed_in_batches(
        np.arange(len(cells)),
        load,
        model.aerial,
        cfg.encode_batch_size,
        "aerial",
        (OutOfCoverageError,),
        progress,
    )
    if not kept:
        return Anchors.empty(model.dim)
    return Anchors(torch.from_numpy(vectors), torch.from_numpy(rows[kept]))


def _embed_in_batches(items, load, encoder, batch_size: int, what: str, skip, progress):
    """Embed ``load(item)`` of every item -> (float32 [K, D] or None, the K items kept);
    items whose ``load`` raises one of ``skip`` are left out."""

    embedded = embed_items(
        encoder.encode,
        items,
        load,
        encoder.dim,
        batch_size,
        skip=skip,
        progress=progress,
        desc=f"refit: embed {what}",
    )
    kept = [items[i] for i in embedded.kept]
    return (embedded.embeddings if kept else None), kept


def _settings(experiment: ExperimentConfig, cfg: RefitConfig) -> dict:
    """What a refit depends on besides the source checkpoint (the skip check compares it)."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k != "enabled"}
    return {"refit": settings, "loss": config_to_dict(experiment.loss)}


def run(
    cfg: RefitConfig | None,
    run_dir: str | Path,
    dataset: Dataset | str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    experiment: ExperimentConfig | None = None,
    folder: OutputFolder | None = None,
) -> Path:
    """Refit the prototypes of ``run_dir``'s last checkpoint (``cfg`` None: the refit
    settings it was trained with) on ``dataset`` (None: the run's); returns the refit file.

    ``experiment``: the config the checkpoint was trained with, when the caller holds it
    (the trainer, at the end of a run); None reads it from the checkpoint's card.
    ``folder``: the run folder's ``OutputFolder`` when the caller holds its lock (the
    trainer); None takes the lock here.

    The anchors are embedded on ``device`` (auto: cuda when available); the table itself
    is refitted on the CPU.
    """
    source = Path(run_dir) / "checkpoints" / SOURCE
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint to refit: {source} not found")
    if folder is not None:
        return _refit(cfg, folder, dataset, overwrite, progress, device, experiment)
    with stage_output(run_dir, RUN_OUTPUT) as locked:  # a folder train did not write: refused
        return _refit(cfg, locked, dataset, overwrite, progress, device, experiment)


def _refit(cfg, run: OutputFolder, dataset, overwrite, progress, device, experiment) -> Path:
    """The body of ``run`` (the run folder's lock held; its files written through ``run``)."""
    folder = run.path / "checkpoints"
    source = folder / SOURCE
    model = load_model(source, device="cpu")
    if experiment is None:
        experiment = experiment_from_card(model.card)
    cfg = cfg or experiment.refit
    source_sha = sha256_file(source)
    info_path, target = folder / REFIT_INFO, folder / REFIT_WEIGHTS
    settings = _settings(experiment, cfg)
    if info_path.is_file() and target.is_file() and not overwrite:
        done = RefitRecord.load(folder)
        if done.source_sha256 == source_sha and done.settings == settings:
            logger.info("refit: %s is up to date; skipping (use --overwrite)", target)
            return target
    data = Dataset.of(dataset if dataset is not None else dataset_of_run(run.path))
    seed = experiment.train.seed
    tick = time.monotonic()
    # Without optimisation (or ground term) ground images only mark the covered rows.
    embed_ground = cfg.epochs > 0 and cfg.weight_ground_prototype > 0
    encoders = resolve_device(device)
    model.ground.to(encoders), model.aerial.to(encoders)
    ground = ground_anchors(model, data, cfg, seed, embed_ground, progress)
    aerial = aerial_anchors(model, data, cfg, seed, progress)
    model.ground.cpu(), model.aerial.cpu()
    stats = refit_table(
        model.prototypes,
        ground,
        aerial,
        cfg,
        ms_params(experiment),
        experiment.loss,
        experiment.optim.prototype_optimizer,
        seed,
        progress,
    )
    with run.file(f"checkpoints/{REFIT_WEIGHTS}") as temporary:  # atomic: never half-written
        write_model(model, temporary)
    record = RefitRecord(
        source=SOURCE,
        source_sha256=source_sha,
        settings=settings,
        seconds=round(time.monotonic() - tick, 1),
        stats=stats,
    )
    run.save(record, f"checkpoints/{REFIT_INFO}")
    logger.info(
        "refit: %d of %d rows re-seeded (%s), %d refitted (loss %s -> %s); wrote %s",
        stats["rows_reseeded"],
        stats["rows_total"],
        cfg.init,
        stats["rows_refitted"],
        stats["loss_before"],
        stats["loss_after"],
        target,
    )
    return target
