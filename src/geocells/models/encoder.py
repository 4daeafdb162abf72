"""Encoder = backbone + SALAD + linear projection to D + L2 norm; carries its preprocessing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from geocells.models.backbone import Backbone, input_normalization
from geocells.models.config import ModelConfig
from geocells.models.device import inference_autocast
from geocells.models.salad import SALAD


class Encoder(nn.Module):
    """Image -> unit embedding. ``forward(x: [B, 3, S, S]) -> [B, D]``.

    ``preprocess`` turns uint8 ``HxWx3`` arrays or PIL images into the normalised input
    (resized to ``input_size`` x ``input_size``, whole image, no crop).
    """

    def __init__(self, cfg: ModelConfig, input_size: int, load_pretrained: bool = True) -> None:
        super().__init__()
        if input_size < 8:
            raise ValueError(f"input size must be >= 8 pixels, got {input_size}")
        self.input_size = int(input_size)
        self.backbone = Backbone(cfg, load_pretrained=load_pretrained)
        mean, std = input_normalization(self.backbone, cfg)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        # A probe for the token shape; in eval mode, so BatchNorm's running statistics
        # (pretrained ones included) are not moved by a blank image.
        self.backbone.eval()
        with torch.no_grad():
            _, tokens = self.backbone(torch.zeros(1, 3, input_size, input_size))
        self.backbone.train()
        self.num_tokens = tokens.shape[1]
        self.aggregator = SALAD(
            tokens.shape[2],
            clusters=cfg.clusters,
            cluster_dim=cfg.cluster_dim,
            global_dim=cfg.global_dim,
            hidden_dim=cfg.hidden_dim,
            sinkhorn_iters=cfg.sinkhorn_iters,
            dropout=cfg.dropout,
        )
        if self.num_tokens <= cfg.clusters:
            raise ValueError(
                f"backbone {cfg.backbone} gives {self.num_tokens} tokens at {input_size} px, "
                f"not more than model.clusters={cfg.clusters}; raise the input size, pick an "
                "earlier model.feature_stage or fewer clusters"
            )
        self.projection = nn.Linear(self.aggregator.out_dim, cfg.dim)
        self.dim = cfg.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, S, S] normalised -> [B, D] unit vectors."""
        global_token, tokens = self.backbone(x)
        descriptor = self.aggregator(tokens, global_token)  # [B, g + m * l]
        return F.normalize(self.projection(descriptor), dim=1)

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen trunk's output for x: [B, 3, S, S] normalised (no gradients)."""
        with torch.no_grad():
            return self.backbone.forward_trunk(x)

    def forward_from_trunk(self, trunk: torch.Tensor) -> torch.Tensor:
        """Trunk output (``forward_trunk``, e.g. from a cache) -> [B, D] unit vectors;
        ``forward(x) == forward_from_trunk(forward_trunk(x))``."""
        global_token, tokens = self.backbone.forward_top(trunk)
        descriptor = self.aggregator(tokens, global_token)
        return F.normalize(self.projection(descriptor), dim=1)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, S, S, 3] -> float [B, 3, S, S] with this encoder's mean/std."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def resize(self, image: np.ndarray | Image.Image, index: int = 0) -> np.ndarray:
        """One image (uint8 HxWx3 array or PIL) -> uint8 [S, S, 3] (bilinear, antialiased)."""
        if isinstance(image, Image.Image):
            pil = image.convert("RGB")
        else:
            array = np.asarray(image)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(
                    f"image {index}: expected uint8 HxWx3, got {array.dtype} {array.shape}"
                )
            pil = Image.fromarray(array)
        size = (self.input_size, self.input_size)
        if pil.size != size:
            pil = pil.resize(size, Image.BILINEAR)
        return np.asarray(pil, dtype=np.uint8)

    def preprocess(self, images: Sequence[np.ndarray | Image.Image]) -> torch.Tensor:
        """list of uint8 HxWx3 arrays / PIL images -> [B, 3, S, S] normalised float."""
        if len(images) == 0:
            return torch.empty(0, 3, self.input_size, self.input_size)
        pixels = np.stack([self.resize(image, i) for i, image in enumerate(images)])
        return self.normalize(torch.from_numpy(pixels))

    @torch.no_grad()
    def encode(
        self, images: Sequence[np.ndarray | Image.Image], batch_size: int = 64
    ) -> np.ndarray:
        """Embed images in eval mode without gradients -> float32 [B, D] (on CUDA under
        bf16 autocast, ``geocells.models.device``)."""
        was_training = self.training
        self.eval()
        device = self._mean.device
        try:
            with inference_autocast(device):
                chunks = [
                    self(self.preprocess(images[i : i + batch_size]).to(device)).float().cpu()
                    for i in range(0, len(images), batch_size)
                ]
        finally:
            self.train(was_training)
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(chunks).numpy().astype(np.float32, copy=False)

    def embed_files(self, paths: Sequence, batch_size: int = 64, **options):
        """Embed image files in batches; unreadable ones are reported in the result's
        ``failures`` and skipped (``geocells.models.embed.embed_files``)."""
        from geocells.models.embed import embed_files

        return embed_files(self, paths, batch_size, **options)
