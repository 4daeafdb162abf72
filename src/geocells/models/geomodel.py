"""GeoModel: ground encoder, aerial encoder and prototype table, built from a ModelCard.

``build_model(card, prototype_cells)`` makes a fresh model (pretrained backbone weights
only from a local file); ``load_model(run_or_checkpoint)`` rebuilds it from a checkpoint
alone (the card in the safetensors metadata, ``geocells.models.card``) and fails loudly on
anything missing. Nothing here knows the trainer's settings: they ride in the card as
provenance.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geocells.io import ArtifactError, sha256_file
from geocells.models.card import (
    CellGeometry,
    ModelCard,
    RefitRecord,
    card_from_metadata,
    card_with_geometry,
)
from geocells.models.config import ModelConfig
from geocells.models.device import resolve_device
from geocells.models.encoder import Encoder
from geocells.models.prototypes import PrototypeTable

logger = logging.getLogger(__name__)

# A prototype refit (``geocells refit``) writes these beside the checkpoint it refits.
REFIT_WEIGHTS = "refit.safetensors"
REFIT_INFO = RefitRecord.FILE
REFIT_SOURCE = "last.safetensors"


class GeoModel(nn.Module):
    """``ground`` and ``aerial`` encoders (separate weights) and ``prototypes``."""

    def __init__(self, card: ModelCard, prototype_cells: np.ndarray, load_pretrained=True):
        super().__init__()
        model_cfg = card.model
        self.ground = Encoder(model_cfg, model_cfg.input_size, load_pretrained)
        self.aerial = Encoder(model_cfg, model_cfg.aerial_input_size, load_pretrained)
        if self.ground.backbone.source_normalization and not (model_cfg.mean and model_cfg.std):
            # The weights file said how to normalise; the card must say it too, since a
            # model rebuilt from a checkpoint never reads that file.
            model_cfg = dataclasses.replace(
                model_cfg, mean=list(self.ground.mean), std=list(self.ground.std)
            )
            card = dataclasses.replace(card, model=model_cfg)
        self.card = card
        self.prototypes = PrototypeTable(
            prototype_cells,
            card.prototype_level,
            model_cfg.dim,
            model_cfg.prototype_init_std,
            model_cfg.prototype_dtype,
        )

    @property
    def cell_level(self) -> int:
        """Lc: level of the database cells (and ground<->aerial labels)."""
        return self.card.cell_level

    @property
    def prototype_level(self) -> int:
        """Lp: level of the prototype cells."""
        return self.card.prototype_level

    @property
    def aerial_tile_m(self) -> float:
        """Edge of an aerial tile's footprint in metres."""
        return self.card.aerial_tile_m

    @property
    def aerial_px(self) -> int:
        """Pixels per edge at which aerial tiles should be cropped (the aerial input size)."""
        return self.aerial.input_size

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.card.model.dim

    def forward(
        self, ground: torch.Tensor, aerial: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ground: [B, 3, Sg, Sg], aerial: [A, 3, Sa, Sa] -> ([B, D], [A, D]) unit vectors."""
        return self.ground(ground), self.aerial(aerial)


def as_card(cfg: Any) -> ModelCard:
    """A ModelCard from a card, a ModelConfig (``CellGeometry`` defaults) or an experiment."""
    if isinstance(cfg, ModelCard):
        cfg.check()
        return cfg
    if isinstance(cfg, ModelConfig):  # a fresh model at the default levels
        return ModelCard(model=cfg, **dataclasses.asdict(CellGeometry()))
    if hasattr(cfg, "model") and hasattr(cfg, "data"):
        return ModelCard.from_experiment(cfg)
    raise ValueError(f"build_model needs a ModelCard, ModelConfig or experiment, got {type(cfg)}")


def build_model(
    cfg: ModelCard | ModelConfig | Any, prototype_cells: np.ndarray, load_pretrained: bool = True
) -> GeoModel:
    """A fresh GeoModel; ``prototype_cells``: uint64 sorted level-Lp cells of the region."""
    return GeoModel(as_card(cfg), np.asarray(prototype_cells), load_pretrained)


def write_model(model: GeoModel, path: Path) -> None:
    """Write the model's weights and card to the ``.safetensors`` file ``path`` (as it is:
    the caller writes to a temporary name, ``save_model`` or a stage's ``OutputFolder``)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=model.card.metadata())


def save_model(model: GeoModel, path: Path) -> Path:
    """Write the model's weights and card to one ``.safetensors`` file (atomically)."""
    from geocells.io import atomic_write

    with atomic_write(path) as tmp:
        write_model(model, tmp)
    return Path(path)


def current_refit(folder: Path) -> Path | None:
    """``folder/refit.safetensors`` when it was made from the present ``last.safetensors``.

    A refit of an older ``last`` (training went on afterwards) is stale: it is ignored with
    a warning, so a database is never built from prototypes that do not fit its encoders.
    """
    weights, info = folder / REFIT_WEIGHTS, folder / REFIT_INFO
    if not (weights.is_file() and info.is_file() and (folder / REFIT_SOURCE).is_file()):
        return None
    recorded = RefitRecord.load(folder).source_sha256  # ArtifactError naming the fix
    if recorded != sha256_file(folder / REFIT_SOURCE):
        logger.warning(
            "%s was made from another %s (training went on since); using %s. "
            "Run `geocells refit` again to refresh it.",
            weights,
            REFIT_SOURCE,
            REFIT_SOURCE,
        )
        return None
    return weights


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, its ``checkpoints/`` folder or a ``.safetensors`` file -> the file.

    In a folder, ``refit.safetensors`` (prototype refit, ``geocells refit``) is preferred
    while it was made from the present ``last.safetensors``; name a file to choose.
    """
    path = Path(path)
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            if (folder / "last.safetensors").is_file():
                return current_refit(folder) or folder / "last.safetensors"
        raise FileNotFoundError(f"no checkpoint in {path} (expected checkpoints/last.safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint {path} is not a .safetensors file")
    return path


def read_card(run_or_checkpoint: str | Path) -> ModelCard:
    """The ModelCard of a checkpoint, without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    path = resolve_checkpoint(run_or_checkpoint)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    return card_from_metadata(metadata, str(path))


def load_model(run_or_checkpoint: str | Path, device: str | torch.device = "auto") -> GeoModel:
    """Rebuild a trained GeoModel from a run folder or checkpoint file (eval mode), on
    ``device``: auto (cuda when available, else cpu) | cpu | cuda[:N]."""
    from safetensors import SafetensorError, safe_open

    target = resolve_device(device)  # a bad name fails before the file is read

    path = resolve_checkpoint(run_or_checkpoint)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    try:
        card = card_from_metadata(metadata, str(path))
    except ArtifactError as err:
        raise ValueError(f"checkpoint {path} has an unusable model card: {err}") from err
    if "prototypes.cell_ids" not in state:
        raise ValueError(f"checkpoint {path} lacks the prototype cells (prototypes.cell_ids)")
    cells = state["prototypes.cell_ids"].numpy().view(np.uint64)
    model = build_model(card, cells, load_pretrained=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"checkpoint {path} does not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True)
    logger.info("loaded model from %s (%d prototypes) on %s", path, len(model.prototypes), target)
    return model.to(target).eval()


def record_geometry(
    checkpoint: str | Path, *, cell_level: int, prototype_level: int, aerial_tile_m: float
) -> Path:
    """Write the levels and tile size a model was trained with into a checkpoint whose card
    lacks them (the fix ``load_model``'s refusal names); the weights are kept as they are."""
    from safetensors import safe_open

    from geocells.io import atomic_write

    path = resolve_checkpoint(checkpoint)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    geometry = CellGeometry(cell_level, prototype_level, aerial_tile_m)
    geometry.check_geometry()
    card = card_with_geometry(metadata, geometry, str(path))
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=card.metadata())
    logger.info("%s: recorded %s", path, geometry)
    return path
