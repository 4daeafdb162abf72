"""Model config: backbone, SALAD aggregation, projection and prototype table sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """Both encoders (same architecture, separate weights) and the prototype table."""

    # Any timm model name; created with pretrained=False (weights only from `pretrained`).
    backbone: str = "resnet18"
    # Extra keyword arguments for timm.create_model (e.g. {"img_size": 322} for a ViT).
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    # Local weights file (official DINOv2 .pth, timm .safetensors/.pth); "" = random init.
    pretrained: str = ""
    # CNNs: feature stage used as tokens (timm forward_intermediates index); -1 = last.
    feature_stage: int = -1
    # Train only the last N blocks (ViT: transformer blocks, the paper trains 4;
    # EfficientNet: inverted-residual blocks) and what follows them; the trunk before them
    # is frozen (and can be cached: train.cache_features). 0 = all frozen; -1 = all train.
    trainable_blocks: int = -1
    channels_last: bool = False
    # Square input sizes in pixels (ground query images, aerial tiles).
    input_size: int = 128
    aerial_input_size: int = 128
    # Normalisation; empty = the timm model's default (ImageNet mean/std for most).
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    # SALAD (Izquierdo & Civera 2024): m clusters, l dims per cluster, g global dims.
    clusters: int = 64
    cluster_dim: int = 128
    global_dim: int = 256
    hidden_dim: int = 512
    sinkhorn_iters: int = 3
    dropout: float = 0.0
    # Final embedding dimension D (ground, aerial and prototypes).
    dim: int = 256
    # Prototype rows start as N(0, 1) vectors (their direction is what counts).
    prototype_init_std: float = 1.0
    # Storage of the prototype weights: float32, or bfloat16 / float16 (half the memory,
    # for tens of millions of prototypes; looked-up rows are converted to float32).
    prototype_dtype: str = "float32"
