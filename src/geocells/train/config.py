"""The experiment config: model, data/sampling, loss, optimiser and trainer settings.

Presets live in ``configs/train/{name}.yaml``; ``key=value`` overrides address fields by
dotted path (``optim.lr=3e-4``). The resolved config is saved as ``run/config.yaml`` and
inside every checkpoint, so a model is rebuilt from a checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geocells.config import ConfigError, load_preset, require_at_least, resolve_config
from geocells.models.card import CellGeometry
from geocells.models.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class DataConfig(CellGeometry):
    """Cell levels and aerial tile size (``CellGeometry``: cell_level, prototype_level,
    aerial_tile_m) and how training samples are drawn."""

    max_shift_m: float = 40.0  # random translation of the training aerial crop
    rotate: bool = True  # random rotation 0-360 deg of the training aerial crop
    aerial_only_per_batch: int = 16  # extra aerial tiles of random region cells per batch
    land_only: bool = False  # prototype cells: only cells on land
    # Ground images: random brightness/contrast/saturation/colour-balance of this strength
    # (queries come from other captures: season, sun, camera); 0 = off.
    color_jitter: float = 0.0
    # Panoramas (fov = 360) train on a fresh perspective crop per sample: heading uniform,
    # field of view uniform in this range (degrees, around the query FOV), pitch within ±.
    pano_fov_deg: tuple[float, float] = (80.0, 100.0)
    pano_pitch_deg: float = 5.0
    workers: int = 1  # DataLoader worker processes (0 = in the main process)


@dataclass
class LossConfig:
    """Multi-similarity loss (Wang et al. 2019) on the three sides of the triangle."""

    alpha: float = 2.0  # positive scale
    beta: float = 50.0  # negative scale
    base: float = 0.5  # lambda, the similarity margin
    mining_margin: float = 0.1  # epsilon of the pair mining
    weight_ground_aerial: float = 1.0
    weight_ground_prototype: float = 1.0
    weight_aerial_prototype: float = 1.0
    all_negatives_max: int = 200_000  # tables up to this size: every prototype is a negative
    random_negatives: int = 16_384  # bigger tables: this many random rows ...
    neighbor_rings: int = 2  # ... plus this many rings of S2 neighbours, plus in-batch rows
    chunk_size: int = 65_536  # prototype rows per chunk when mining
    # Prototype terms: "ms" (multi-similarity, mined pairs) or "softmax" (normalised
    # softmax over the prototypes with scale and additive margin, docs/training.md).
    prototype_loss: str = "ms"
    softmax_scale: float = 32.0
    softmax_margin: float = 0.1
    softmax_all_max: int = 50_000  # tables up to this size: the softmax spans every row


@dataclass
class OptimConfig:
    """AdamW for the encoders, a sparse optimiser for the prototype rows."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    prototype_optimizer: str = "sparse_adam"  # or "row_adagrad" (4 B state per row)
    prototype_lr: float = 1e-2
    warmup_steps: int = 100
    schedule: str = "cosine"  # or "constant"
    grad_clip: float = 1.0  # max grad norm of the encoders; 0 = off


@dataclass
class TrainConfig:
    """Loop length, batching, checkpoints, validation and devices."""

    seed: int = 0
    batch_size: int = 32  # ground/aerial pairs per step and process
    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many steps
    max_minutes: float = 0.0  # > 0: stop (checkpoint, validate) after this much training time
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    val_max_queries: int = 500  # val ground images used by the per-epoch validation
    val_max_cells: int = 50_000  # aerial gallery cap (beyond: the true cells + a random sample)
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = False  # autocast bf16 (CUDA, or CPUs with native bf16)
    log_every: int = 10


@dataclass
class RefitConfig:
    """Prototype refit after training: encoders frozen, the table re-optimised alone.

    See ``geocells.train.refit``. It never changes the training checkpoints; it writes
    ``checkpoints/refit.safetensors``, which ``load_model(RUN)`` prefers while it matches
    ``last.safetensors``.
    """

    enabled: bool = False  # run at the end of `geocells train` (else: `geocells refit RUN`)
    # Passes over all anchors of the loss-based refit. 0 (default): only the re-seed of
    # `init`; optimising hurt on the demo's val split (docs/training.md).
    epochs: int = 0
    batch_size: int = 4096  # anchors (ground + aerial) per step
    lr: float = 1e-2  # prototype learning rate (rows are rescaled to unit length first)
    rows: str = "all"  # optimised: all (any anchor) | covered (ground) | uncovered (aerial only)
    # Rows without ground images: keep | aerial_mean (their aerial anchors' mean) |
    # aerial_gap (that mean moved by the average prototype - aerial offset of covered rows)
    init: str = "aerial_gap"
    weight_ground_prototype: float = 1.0
    weight_aerial_prototype: float = 1.0
    aerial_per_row: int = 4  # aerial anchors per prototype row: tiles of level-Lc descendants
    max_ground: int = 0  # ground anchors: at most this many train images (0: all)
    encode_batch_size: int = 128  # images per encoder call while embedding anchors


@dataclass
class CacheConfig:
    """Training on cached frozen-trunk features (``geocells.train.features``).

    With ``model.trainable_blocks >= 0`` the trunk before the trainable blocks is frozen:
    its output for fixed draws of the training views (ground crops, aerial tiles) is
    computed once, stored as float16 memmaps, and the trainable blocks, SALAD, projection
    and prototypes train on it. Augmentation is then fixed per view (the draws below).
    """

    enabled: bool = False
    ground_views: int = 4  # per train image: panorama crops (headings spread over 360°)
    aerial_views: int = 2  # per train image: aerial tiles (random rotation and shift)
    aerial_only_tiles: int = 4096  # tiles of random region cells (the aerial-only samples)
    # Where the cache lives: "" = RUN/features; a folder shared by runs is fine (its
    # meta.json key says which weights, dataset and draws it holds; a mismatch rebuilds).
    folder: str = ""
    batch_size: int = 64  # images per trunk call while building
    max_gb: float = 16.0  # refuse to build a cache bigger than this on disk


@dataclass
class ExperimentConfig:
    """Everything a training run and the model it produces depend on."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    refit: RefitConfig = field(default_factory=RefitConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


REFIT_ROWS = ("all", "covered", "uncovered")
PROTOTYPE_LOSSES = ("ms", "softmax")
REFIT_INITS = ("keep", "aerial_mean", "aerial_gap")


def check_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Reject values that type checks cannot catch."""
    cfg.data.check_geometry()
    if cfg.optim.prototype_optimizer not in ("sparse_adam", "row_adagrad"):
        raise ConfigError(
            f"optim.prototype_optimizer {cfg.optim.prototype_optimizer!r}; "
            "valid: sparse_adam, row_adagrad"
        )
    if cfg.loss.prototype_loss not in PROTOTYPE_LOSSES:
        raise ConfigError(
            f"loss.prototype_loss {cfg.loss.prototype_loss!r}; valid: {', '.join(PROTOTYPE_LOSSES)}"
        )
    if cfg.optim.schedule not in ("cosine", "constant"):
        raise ConfigError(f"optim.schedule {cfg.optim.schedule!r}; valid: cosine, constant")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device {cfg.train.device!r}; valid: auto, cpu, cuda")
    if cfg.refit.rows not in REFIT_ROWS:
        raise ConfigError(f"refit.rows {cfg.refit.rows!r}; valid: {', '.join(REFIT_ROWS)}")
    if cfg.refit.init not in REFIT_INITS:
        raise ConfigError(f"refit.init {cfg.refit.init!r}; valid: {', '.join(REFIT_INITS)}")
    if cfg.refit.epochs < 0 or cfg.refit.batch_size < 2 or cfg.refit.aerial_per_row < 0:
        raise ConfigError("refit.epochs >= 0, refit.batch_size >= 2, refit.aerial_per_row >= 0")
    low, high = cfg.data.pano_fov_deg
    if not 10.0 <= low <= high <= 150.0 or not 0.0 <= cfg.data.pano_pitch_deg <= 45.0:
        raise ConfigError(
            f"data.pano_fov_deg {list(cfg.data.pano_fov_deg)} must be [low, high] within "
            f"10..150 and data.pano_pitch_deg {cfg.data.pano_pitch_deg} within 0..45"
        )
    if cfg.train.batch_size < 2:
        raise ConfigError("train.batch_size must be >= 2 (the loss needs negatives)")
    sizes = ("epochs", "checkpoint_every", "keep_checkpoints", "val_max_cells", "log_every")
    require_at_least(cfg.train, 1, sizes, "train")
    require_at_least(
        cfg.train, 0, ("max_steps", "max_minutes", "val_max_queries", "threads"), "train"
    )
    require_at_least(cfg.data, 0, ("workers", "aerial_only_per_batch"), "data")
    require_at_least(cfg.cache, 1, ("ground_views", "aerial_views", "batch_size"), "cache")
    require_at_least(cfg.cache, 0, ("aerial_only_tiles", "max_gb"), "cache")
    if cfg.cache.enabled and cfg.model.trainable_blocks < 0:
        raise ConfigError(
            "cache.enabled=true needs a frozen trunk: set model.trainable_blocks >= 0 "
            "(the number of last backbone blocks that train)"
        )
    return cfg


def experiment_config(
    preset: str | Path = "cpu-small",
    overrides: Sequence[str] = (),
    *,
    resume_from: str | Path | None = None,
) -> ExperimentConfig:
    """The one typed experiment config of a run: a train preset (shipped name or YAML path)
    plus ``key=value`` overrides, resolved and checked once.

    ``resume_from`` (a run folder): the base is that run's saved ``config.yaml`` instead of
    ``preset``, so ``--resume`` continues with the run's own settings plus the overrides
    (the trainer then refuses any change outside ``train`` and ``refit``).
    """
    base = Path(resume_from) / "config.yaml" if resume_from is not None else preset
    return check_config(resolve_config(ExperimentConfig, load_preset(base, "train"), overrides))


# Groups a resumed run may change: they say how long and how to train, not what is trained.
RESUMABLE_GROUPS = ("train", "refit")


def resume_changes(saved: ExperimentConfig, cfg: ExperimentConfig) -> list[str]:
    """Dotted keys outside ``RESUMABLE_GROUPS`` whose value differs between ``saved`` (the
    run folder's config) and ``cfg``: what ``--resume`` refuses. Tuples equal lists."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return [
        f"{group.name}.{item.name}"
        for group in dataclasses.fields(cfg)
        if group.name not in RESUMABLE_GROUPS
        for item in dataclasses.fields(getattr(cfg, group.name))
        if plain(getattr(getattr(saved, group.name), item.name))
        != plain(getattr(getattr(cfg, group.name), item.name))
    ]


def _known_part(schema: Any, data: dict[str, Any], prefix: str, dropped: list[str]) -> dict:
    """The keys of ``data`` that ``schema`` (a dataclass) knows, recursively; others -> dropped."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    kept = {}
    for key, value in data.items():
        if key not in fields:
            dropped.append(prefix + key)
            continue
        default = getattr(schema(), key)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kept[key] = _known_part(type(default), value, f"{prefix}{key}.", dropped)
        else:
            kept[key] = value
    return kept


def experiment_from_card(card: Any) -> ExperimentConfig:
    """The experiment config a model was trained with, from its card's provenance.

    Settings this version no longer knows (a trainer key renamed since) are dropped with a
    warning: the card's model part, not this, decides what the network is.
    """
    dropped: list[str] = []
    known = _known_part(ExperimentConfig, dict(card.experiment), "", dropped)
    if dropped:
        logger.warning("ignoring training settings this geocells does not know: %s", dropped)
    return check_config(resolve_config(ExperimentConfig, known))
