"""A timm backbone as a sequence of units, to split it into a frozen trunk and a trainable top.

``backbone_units(model)`` lists what ``forward_features`` runs, in order: an embedding unit
(EfficientNet: stem conv + BN; ViT: patch embedding + position embedding), one unit per
block (EfficientNet: each inverted-residual block of every stage; ViT: each transformer
block) and a closing unit (EfficientNet: the 1x1 head conv + BN, Identity once pruned; ViT:
the final norm). Running them all equals ``forward_features`` (checked in the tests).
``model.trainable_blocks = N`` trains the units from the N-th last block on; everything
before is the frozen trunk, whose output can be computed once and cached
(``geocells.train.features``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Unit:
    """One step of a backbone's forward: ``run(x) -> x``, over ``modules``."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    modules: list[nn.Module]
    is_block: bool


def _efficientnet_units(model: nn.Module) -> list[Unit]:
    units = [
        Unit("stem", lambda x: model.bn1(model.conv_stem(x)), [model.conv_stem, model.bn1], False)
    ]
    for s, stage in enumerate(model.blocks):
        units += [Unit(f"blocks.{s}.{i}", block, [block], True) for i, block in enumerate(stage)]
    units.append(
        Unit("head", lambda x: model.bn2(model.conv_head(x)), [model.conv_head, model.bn2], False)
    )
    return units


def _vit_units(model: nn.Module) -> list[Unit]:
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = model._pos_embed(model.patch_embed(x))
        return model.norm_pre(model.patch_drop(x))

    modules = [m for m in (model.patch_embed, model.norm_pre) if isinstance(m, nn.Module)]
    units = [Unit("embed", embed, modules, False)]
    units += [Unit(f"blocks.{i}", block, [block], True) for i, block in enumerate(model.blocks)]
    units.append(Unit("norm", model.norm, [model.norm], False))
    return units


def backbone_units(model: nn.Module) -> list[Unit]:
    """The units of a timm EfficientNet/MobileNet-style CNN or ViT; others raise naming it."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, EfficientNet):
        return _efficientnet_units(model)
    if isinstance(model, VisionTransformer):
        return _vit_units(model)
    raise ValueError(
        f"model.trainable_blocks needs a backbone made of blocks (timm EfficientNet or "
        f"VisionTransformer); {type(model).__name__} is neither (use -1)"
    )


def split_index(units: list[Unit], trainable_blocks: int) -> int:
    """Index of the first trainable unit: the ``trainable_blocks``-th last block (all units
    frozen when 0; every block trains when the backbone has fewer, e.g. a shallow test ViT)."""
    blocks = [i for i, unit in enumerate(units) if unit.is_block]
    if trainable_blocks == 0 or not blocks:
        return len(units)
    return blocks[max(0, len(blocks) - trainable_blocks)]


def run_units(units: list[Unit], x: torch.Tensor) -> torch.Tensor:
    """Run ``units`` in order."""
    for unit in units:
        x = unit.run(x)
    return x
