"""A frozen pretrained trunk as a feature extractor (ImageNet EfficientNet-Lite by default).

``FrozenTrunk`` builds a timm backbone through the project's own loader
(``model.pretrained`` rules: a local file or ``package:NAME``, keys converted by what the
file holds, mismatches raise), puts it in eval mode without gradients and carries its
preprocessing. It is what a "frozen generic network" baseline uses, e.g.
``benchmarks/realism.py``::

    trunk = FrozenTrunk(feature_stage=3)            # tf_efficientnet_lite0, ImageNet
    maps = trunk.features(images)                   # uint8 HxWx3 list -> [N, C, h, w]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from geocells.models.backbone import Backbone, input_normalization
from geocells.models.config import ModelConfig


class FrozenTrunk(nn.Module):
    """Pretrained backbone up to ``feature_stage``, eval mode, no gradients.

    forward(x: [B, 3, S, S] normalised) -> [B, C, h, w] (CNN feature map; ViTs give
    tokens [B, T, C]). ``feature_stage`` is timm's ``forward_intermediates`` index
    (EfficientNet-Lite0: 0..4 the ends of the stages of stride 2, 4, 8, 16, 32 with 16,
    24, 40, 112, 320 channels; -1 = the whole trunk with its 1x1 head conv, 1280).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        pretrained: str = "package:efficientnet_lite0",
        feature_stage: int = -1,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if not pretrained:
            raise ValueError("FrozenTrunk needs pretrained weights (a file or package:NAME)")
        cfg = ModelConfig(backbone=backbone, pretrained=pretrained, feature_stage=feature_stage)
        self.backbone = Backbone(cfg)
        self.input_size = int(input_size)
        mean, std = input_normalization(self.backbone, cfg)
        self.mean, self.std = tuple(mean), tuple(std)
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenTrunk:
        """Always eval: the trunk is frozen (BatchNorm statistics included)."""
        return super().train(False)

    def preprocess(self, images: Sequence[np.ndarray | Image.Image]) -> torch.Tensor:
        """uint8 HxWx3 arrays / PIL images -> [B, 3, S, S] normalised (bilinear resize of
        the whole image to ``input_size`` squared)."""
        size = (self.input_size, self.input_size)
        pixels = []
        for index, image in enumerate(images):
            pil = image if isinstance(image, Image.Image) else Image.fromarray(_rgb(image, index))
            pil = pil.convert("RGB")
            pixels.append(np.asarray(pil if pil.size == size else pil.resize(size, Image.BILINEAR)))
        if not pixels:
            return torch.empty(0, 3, *size)
        x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, S, S] normalised -> features of ``feature_stage``."""
        return self.backbone.features(x)

    @torch.no_grad()
    def features(
        self, images: Sequence[np.ndarray | Image.Image], batch_size: int = 32
    ) -> np.ndarray:
        """Images -> float32 feature maps [N, C, h, w], in batches."""
        chunks = [
            self(self.preprocess(images[i : i + batch_size])).float().numpy()
            for i in range(0, len(images), batch_size)
        ]
        if not chunks:
            raise ValueError("FrozenTrunk.features needs at least one image")
        return np.concatenate(chunks)


def _rgb(image: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image {index}: expected uint8 HxWx3, got {array.dtype} {array.shape}")
    return array
