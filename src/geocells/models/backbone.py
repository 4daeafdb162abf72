"""Backbones from timm by name, giving a global token and local tokens.

ViTs (``forward_features`` returns ``[B, T, C]``): the class token is the global token
and the patch tokens (after class/register tokens) are the local tokens. CNNs (a feature
map ``[B, C, h, w]``): the map, flattened, gives the local tokens, and its mean the
global token. Dispatch is on the shape of the output, never on the model name.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from geocells.models.config import ModelConfig
from geocells.models.units import backbone_units, run_units, split_index
from geocells.models.weights import load_backbone_weights

logger = logging.getLogger(__name__)


def backbone_names() -> list[str]:
    """Every backbone name timm can create."""
    import timm

    return timm.list_models()


def create_timm_model(name: str, kwargs: dict) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=0)``; unknown names list matches."""
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown backbone {name!r} (any timm model name is valid){hint}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad model.backbone_kwargs for {name}: {err}") from err


def input_normalization(backbone: Backbone, cfg: ModelConfig) -> tuple[list, list]:
    """(mean, std) of a backbone's input on 0-1 pixels: ``model.mean/std`` when set, else
    what the loaded weights were trained with (their file's layout tells it), else the timm
    model's ``pretrained_cfg``. GeoModel records the result in its card, so a model rebuilt
    without the weights file normalises the same way."""
    data_cfg = backbone.model.pretrained_cfg
    source_mean, source_std = backbone.source_normalization or (
        data_cfg.get("mean", (0.485, 0.456, 0.406)),
        data_cfg.get("std", (0.229, 0.224, 0.225)),
    )
    mean = list(cfg.mean) or list(source_mean)
    std = list(cfg.std) or list(source_std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"model.mean/std need 3 values (std > 0), got {mean} / {std}")
    return [float(m) for m in mean], [float(s) for s in std]


class Backbone(nn.Module):
    """A timm model as a token extractor.

    forward(x: [B, 3, S, S]) -> (global_token [B, C], tokens [B, N, C]).
    """

    def __init__(self, cfg: ModelConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.model = create_timm_model(cfg.backbone, dict(cfg.backbone_kwargs))
        self.feature_stage = cfg.feature_stage
        # The (mean, std) the loaded weights were trained with, where their file says so.
        self.source_normalization = None
        if load_pretrained and cfg.pretrained:
            classifier = self.model.pretrained_cfg.get("classifier") or "head"
            heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
            self.source_normalization = load_backbone_weights(
                self.model, cfg.pretrained, ignore_prefixes=heads
            )
        if self.feature_stage >= 0:
            # Drop the layers after the stage (and the head) so they cost nothing.
            self.model.prune_intermediate_layers([self.feature_stage], prune_head=True)
        self.channels_last = cfg.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        self.trainable_blocks = cfg.trainable_blocks
        self.trunk_end = 0  # units [0, trunk_end) are frozen (the trunk)
        if cfg.trainable_blocks >= 0:
            if not cfg.pretrained and load_pretrained:
                logger.warning(
                    "model.trainable_blocks=%d freezes randomly initialised blocks: set "
                    "model.pretrained=PATH to local weights (or trainable_blocks=-1)",
                    cfg.trainable_blocks,
                )
            self._freeze_trunk(cfg.trainable_blocks)

    def _freeze_trunk(self, count: int) -> None:
        """Only the last ``count`` blocks and what follows them (EfficientNet's head conv,
        a ViT's final norm) train; the trunk before them is frozen, BatchNorm included
        (as in SALAD's DINOv2 fine-tuning, which trains the last 4 ViT blocks)."""
        units = backbone_units(self.model)
        self.trunk_end = split_index(units, count)
        self.model.requires_grad_(False)
        for unit in units[self.trunk_end :]:
            for module in unit.modules:
                module.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """As nn.Module.train, but a frozen trunk stays in eval mode (fixed BN statistics)."""
        super().train(mode)
        if self.trainable_blocks >= 0:
            for unit in backbone_units(self.model)[: self.trunk_end]:
                for module in unit.modules:
                    module.eval()
        return self

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen trunk: x: [B, 3, S, S] normalised -> its output (a feature map
        [B, C, h, w] or tokens [B, T, C]); what ``geocells.train.features`` caches."""
        if self.trainable_blocks < 0:
            raise ValueError("forward_trunk needs model.trainable_blocks >= 0 (a frozen trunk)")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return run_units(backbone_units(self.model)[: self.trunk_end], x)

    def forward_top(self, trunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trainable top on the trunk's output -> (global [B, C], tokens [B, N, C])."""
        if self.channels_last and trunk.ndim == 4:
            trunk = trunk.contiguous(memory_format=torch.channels_last)
        return self.tokens(run_units(backbone_units(self.model)[self.trunk_end :], trunk))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, S, S] normalised -> the feature map [B, C, h, w] (CNN) or tokens
        [B, T, C] (ViT) of ``feature_stage``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.feature_stage >= 0:
            return self.model.forward_intermediates(
                x, indices=[self.feature_stage], intermediates_only=True
            )[0]
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, S, S] normalised -> (global [B, C], tokens [B, N, C])."""
        return self.tokens(self.features(x))

    def tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``features()`` -> (global [B, C], tokens [B, N, C])."""
        if features.ndim == 4:  # CNN feature map [B, C, h, w]
            tokens = features.flatten(2).transpose(1, 2)
            return tokens.mean(dim=1), tokens
        if features.ndim == 3:  # ViT tokens [B, prefix + N, C]
            if self.num_prefix_tokens == 0:
                return features.mean(dim=1), features
            return features[:, 0], features[:, self.num_prefix_tokens :]
        raise ValueError(
            f"backbone {type(self.model).__name__} gives features of shape "
            f"{tuple(features.shape)}; expected [B, C, h, w] or [B, T, C]"
        )
