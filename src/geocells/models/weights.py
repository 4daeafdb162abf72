"""Pretrained backbone weights from local files only (never downloaded, never random).

Accepted: official DINOv2 ``.pth`` checkpoints (with or without registers; converted by
timm's ViT checkpoint filter), timm ``.safetensors`` and ``.pth`` files. Foreign ``.pth``
files are read with ``torch.load(weights_only=True)``. A missing file, keys of another
architecture, missing keys or shape mismatches raise ``ValueError``/``OSError`` naming
the file and the keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

_MAX_LISTED = 8


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file (no pickled code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"cannot read pretrained weights {path}: {err}") from None
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(
            f"pretrained weights {path}: unsupported suffix {path.suffix!r} "
            "(use .safetensors, .pth, .pt or .bin)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or pickled-code files
        raise ValueError(f"cannot read pretrained weights {path}: {err}") from err
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"pretrained weights {path} hold no plain state dict of tensors")
    return data


def _convert_for_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official DINOv2/other ViT layouts -> timm keys (and resampled position embeddings)."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if isinstance(model, VisionTransformer):
        return checkpoint_filter_fn(state, model)
    return state


def _listed(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_backbone_weights(model: nn.Module, path: str | Path, ignore_prefixes=()) -> None:
    """Load local weights into a timm ``model``; any mismatch raises ``ValueError``.

    Keys starting with one of ``ignore_prefixes`` (the classifier head) may be absent
    from the model and are dropped.
    """
    state = _convert_for_timm(read_state_dict(path), model)
    expected = model.state_dict()
    state = {
        k: v
        for k, v in state.items()
        if k in expected or not any(k.startswith(p) for p in ignore_prefixes)
    }
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    name = type(model).__name__
    if unexpected:
        raise ValueError(
            f"pretrained weights {path} do not fit backbone {name}: "
            f"{len(unexpected)} unexpected keys ({_listed(unexpected)}); "
            "wrong architecture for model.backbone?"
        )
    if missing:
        raise ValueError(
            f"pretrained weights {path} lack {len(missing)} keys of backbone {name}: "
            f"{_listed(missing)}"
        )
    wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        details = _listed(
            [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong]
        )
        raise ValueError(f"pretrained weights {path}: shape mismatch for {details}")
    model.load_state_dict(state, strict=True)
    logger.info("loaded %d pretrained tensors from %s", len(state), path)
