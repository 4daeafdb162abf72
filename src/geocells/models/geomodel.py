"""GeoModel: ground encoder, aerial encoder and prototype table, built from one config.

``build_model(cfg, prototype_cells)`` makes a fresh model (pretrained backbone weights
only from a local file); ``load_model(run_or_checkpoint)`` rebuilds it from a checkpoint
alone (config in the safetensors metadata) and fails loudly on anything missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from geocells.models.config import ModelConfig
from geocells.models.encoder import Encoder
from geocells.models.prototypes import PrototypeTable

if TYPE_CHECKING:
    from geocells.train.config import ExperimentConfig

logger = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "geocells_config"
FORMAT_METADATA_KEY = "geocells_format"
FORMAT = "geocells-model-v1"


class GeoModel(nn.Module):
    """``ground`` and ``aerial`` encoders (separate weights) and ``prototypes``."""

    def __init__(self, config: ExperimentConfig, prototype_cells: np.ndarray, load_pretrained=True):
        super().__init__()
        model_cfg = config.model
        self.config = config
        self.ground = Encoder(model_cfg, model_cfg.input_size, load_pretrained)
        self.aerial = Encoder(model_cfg, model_cfg.aerial_input_size, load_pretrained)
        self.prototypes = PrototypeTable(
            prototype_cells,
            config.data.prototype_level,
            model_cfg.dim,
            model_cfg.prototype_init_std,
            model_cfg.prototype_dtype,
        )

    @property
    def cell_level(self) -> int:
        """Lc: level of the database cells (and ground<->aerial labels)."""
        return self.config.data.cell_level

    @property
    def prototype_level(self) -> int:
        """Lp: level of the prototype cells."""
        return self.config.data.prototype_level

    @property
    def aerial_tile_m(self) -> float:
        """Edge of an aerial tile's footprint in metres."""
        return self.config.data.aerial_tile_m

    @property
    def aerial_px(self) -> int:
        """Pixels per edge at which aerial tiles should be cropped (the aerial input size)."""
        return self.aerial.input_size

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.config.model.dim

    def forward(
        self, ground: torch.Tensor, aerial: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ground: [B, 3, Sg, Sg], aerial: [A, 3, Sa, Sa] -> ([B, D], [A, D]) unit vectors."""
        return self.ground(ground), self.aerial(aerial)


def _as_experiment(cfg) -> ExperimentConfig:
    from geocells.train.config import ExperimentConfig, check_config

    if isinstance(cfg, ExperimentConfig):
        return check_config(cfg)
    if isinstance(cfg, ModelConfig):
        return check_config(ExperimentConfig(model=cfg))
    raise ValueError(f"build_model needs an ExperimentConfig or ModelConfig, got {type(cfg)}")


def build_model(
    cfg: ExperimentConfig | ModelConfig, prototype_cells: np.ndarray, load_pretrained: bool = True
) -> GeoModel:
    """A fresh GeoModel; ``prototype_cells``: uint64 sorted level-Lp cells of the region."""
    return GeoModel(_as_experiment(cfg), np.asarray(prototype_cells), load_pretrained)


def checkpoint_metadata(model: GeoModel) -> dict[str, str]:
    """safetensors metadata that lets ``load_model`` rebuild ``model`` from the file alone."""
    from geocells.config import config_to_dict

    return {
        FORMAT_METADATA_KEY: FORMAT,
        CONFIG_METADATA_KEY: json.dumps(config_to_dict(model.config)),
    }


def save_model(model: GeoModel, path: Path) -> Path:
    """Write the model's weights and config to one ``.safetensors`` file."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=checkpoint_metadata(model))
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, its ``checkpoints/`` folder or a ``.safetensors`` file -> the file.

    In a folder, ``refit.safetensors`` (prototype refit, ``geocells refit``) is preferred
    while it was made from the present ``last.safetensors``; name a file to choose.
    """
    path = Path(path)
    if path.is_dir():
        from geocells.train.refit_stage import current_refit

        for folder in (path / "checkpoints", path):
            if (folder / "last.safetensors").is_file():
                return current_refit(folder) or folder / "last.safetensors"
        raise FileNotFoundError(f"no checkpoint in {path} (expected checkpoints/last.safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint {path} is not a .safetensors file")
    return path


def load_model(run_or_checkpoint: str | Path, device: str | torch.device = "cpu") -> GeoModel:
    """Rebuild a trained GeoModel from a run folder or checkpoint file (eval mode)."""
    from safetensors import SafetensorError, safe_open

    from geocells.config import ConfigError, config_from_dict
    from geocells.train.config import ExperimentConfig

    path = resolve_checkpoint(run_or_checkpoint)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if metadata.get(FORMAT_METADATA_KEY) != FORMAT or CONFIG_METADATA_KEY not in metadata:
        raise ValueError(f"{path} is not a geocells model checkpoint (no {FORMAT} metadata)")
    try:
        cfg = config_from_dict(ExperimentConfig, json.loads(metadata[CONFIG_METADATA_KEY]))
    except (ConfigError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {path} has an unusable config: {err}") from err
    if "prototypes.cell_ids" not in state:
        raise ValueError(f"checkpoint {path} lacks the prototype cells (prototypes.cell_ids)")
    cells = state["prototypes.cell_ids"].numpy().view(np.uint64)
    model = build_model(cfg, cells, load_pretrained=False)
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
    logger.info("loaded model from %s (%d prototypes)", path, len(model.prototypes))
    return model.to(device).eval()
