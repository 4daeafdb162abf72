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

from geocells.config import (
    ConfigError,
    check_settings,
    load_config,
    load_preset,
    resolve_config,
    setting,
)
from geocells.models.card import CellGeometry
from geocells.models.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class DataConfig(CellGeometry):
    """Cell levels and aerial tile size (``CellGeometry``: cell_level, prototype_level,
    aerial_tile_m) and how training samples are drawn."""

    max_shift_m: float = 40.0  # random translation of the training aerial crop
    rotate: bool = True  # random rotation 0-360 deg of the training aerial crop
    aerial_only_per_batch: int = setting(
        16, at_least=0
    )  # extra aerial tiles of random region cells per batch
    land_only: bool = False  # prototype cells: only cells on land
    # Ground images: random brightness/contrast/saturation/colour-balance of this strength
    # (queries come from other captures: season, sun, camera); 0 = off.
    color_jitter: float = 0.0
    # Panoramas (fov = 360) train on a fresh perspective crop per sample: heading uniform,
    # field of view uniform in this range (degrees, around the query FOV), pitch within ±.
    pano_fov_deg: tuple[float, float] = (80.0, 100.0)
    pano_pitch_deg: float = 5.0
    workers: int = setting(1, at_least=0)  # DataLoader worker processes (0 = in the main process)


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
    prototype_loss: str = setting("ms", one_of=("ms", "softmax"))
    softmax_scale: float = 32.0
    softmax_margin: float = 0.1
    softmax_all_max: int = 50_000  # tables up to this size: the softmax spans every row


@dataclass
class OptimConfig:
    """AdamW for the encoders, a sparse optimiser for the prototype rows."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    # row_adagrad: 4 B of optimiser state per prototype row
    prototype_optimizer: str = setting("sparse_adam", one_of=("sparse_adam", "row_adagrad"))
    prototype_lr: float = 1e-2
    warmup_steps: int = 100
    schedule: str = setting("cosine", one_of=("cosine", "constant"))
    grad_clip: float = 1.0  # max grad norm of the encoders; 0 = off


@dataclass
class TrainConfig:
    """Loop length, batching, checkpoints, validation and devices."""

    seed: int = 0
    # ground/aerial pairs per step and process (at least 2: the loss needs negatives)
    batch_size: int = setting(32, at_least=2)
    epochs: int = setting(10, at_least=1)
    max_steps: int = setting(0, at_least=0)  # > 0: stop after this many steps
    # > 0: stop (checkpoint, validate) after this much training time
    max_minutes: float = setting(0.0, at_least=0)
    checkpoint_every: int = setting(500, at_least=1)
    keep_checkpoints: int = setting(2, at_least=1)
    # val ground images used by the per-epoch validation
    val_max_queries: int = setting(500, at_least=0)
    # aerial gallery cap (beyond: the true cells + a random sample)
    val_max_cells: int = setting(50_000, at_least=1)
    threads: int = setting(0, at_least=0)  # torch CPU threads; 0 = leave torch's default
    device: str = setting("auto", one_of=("auto", "cpu", "cuda"))
    bf16: bool = False  # autocast bf16 (CUDA, or CPUs with native bf16)
    log_every: int = setting(10, at_least=1)


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
    epochs: int = setting(0, at_least=0)
    batch_size: int = setting(4096, at_least=2)  # anchors (ground + aerial) per step
    lr: float = 1e-2  # prototype learning rate (rows are rescaled to unit length first)
    rows: str = setting(
        "all", one_of=("all", "covered", "uncovered")
    )  # optimised: all (any anchor) | covered (ground) | uncovered (aerial only)
    # Rows without ground images: keep | aerial_mean (their aerial anchors' mean) |
    # aerial_gap (that mean moved by the average prototype - aerial offset of covered rows)
    init: str = setting("aerial_gap", one_of=("keep", "aerial_mean", "aerial_gap"))
    weight_ground_prototype: float = 1.0
    weight_aerial_prototype: float = 1.0
    aerial_per_row: int = setting(
        4, at_least=0
    )  # aerial anchors per prototype row: tiles of level-Lc descendants
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
    ground_views: int = setting(
        4, at_least=1
    )  # per train image: panorama crops (headings spread over 360°)
    aerial_views: int = setting(
        2, at_least=1
    )  # per train image: aerial tiles (random rotation and shift)
    aerial_only_tiles: int = setting(
        4096, at_least=0
    )  # tiles of random region cells (the aerial-only samples)
    # Where the cache lives: "" = RUN/features; a folder shared by runs is fine (its
    # meta.json key says which weights, dataset and draws it holds; a mismatch rebuilds).
    folder: str = ""
    batch_size: int = setting(64, at_least=1)  # images per trunk call while building
    max_gb: float = setting(16.0, at_least=0)  # refuse to build a cache bigger than this on disk


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

    def cross_check(self) -> None:
        """What the fields' own limits cannot say (``check_settings`` calls it)."""
        low, high = self.data.pano_fov_deg
        if not 10.0 <= low <= high <= 150.0 or not 0.0 <= self.data.pano_pitch_deg <= 45.0:
            raise ConfigError(
                f"data.pano_fov_deg {list(self.data.pano_fov_deg)} must be [low, high] within "
                f"10..150 and data.pano_pitch_deg {self.data.pano_pitch_deg} within 0..45"
            )
        if self.cache.enabled and self.model.trainable_blocks < 0:
            raise ConfigError(
                "cache.enabled=true needs a frozen trunk: set model.trainable_blocks >= 0 "
                "(the number of last backbone blocks that train)"
            )


def check_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Reject values that type checks cannot catch (``resolve_config`` already did, for a
    config it resolved; this is for one built in Python)."""
    return check_settings(cfg)


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
    if resume_from is not None:
        return load_config(ExperimentConfig, Path(resume_from) / "config.yaml", overrides)
    return resolve_config(ExperimentConfig, load_preset(preset, "train"), overrides)


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
    return resolve_config(ExperimentConfig, known)
