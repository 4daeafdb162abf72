"""One training step: encode, three multi-similarity terms, backward, optimiser updates."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from geocells.models.geomodel import GeoModel
from geocells.train.config import ExperimentConfig
from geocells.train.distributed import DistInfo, all_reduce_mean, all_reduce_sparse_grad
from geocells.train.loss import MSParams, cross_modal_loss, prototype_term
from geocells.train.negatives import candidate_rows

logger = logging.getLogger(__name__)


class Encoders(nn.Module):
    """Both encoders as one module (what DistributedDataParallel wraps).

    forward(ground: [B, 3, Sg, Sg], aerial: [A, 3, Sa, Sa]) -> ([B, D], [A, D]); with
    ``from_trunk=True`` the inputs are the frozen trunks' outputs (the trunk cache).
    """

    def __init__(self, model: GeoModel) -> None:
        super().__init__()
        self.ground = model.ground
        self.aerial = model.aerial

    def forward(self, ground: torch.Tensor, aerial: torch.Tensor, from_trunk: bool = False):
        """Unit embeddings of both modalities."""
        if from_trunk:
            return self.ground.forward_from_trunk(ground), self.aerial.forward_from_trunk(aerial)
        return self.ground(ground), self.aerial(aerial)


def color_jitter(pixels: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random photometric change per image: uint8 [B, S, S, 3] -> uint8 [B, S, S, 3].

    Brightness, contrast and saturation factors and a per-channel gain are drawn from
    ``1 ± strength`` (contrast/saturation), ``1 ± strength / 2`` (gains).
    """
    if strength <= 0 or len(pixels) == 0:
        return pixels
    batch = len(pixels)

    def factors(spread: float, shape=(1, 1, 1)) -> torch.Tensor:
        uniform = torch.rand((batch, *shape), generator=generator)
        return (1.0 + spread * (2.0 * uniform - 1.0)).to(pixels.device)

    x = pixels.float()
    x = x * factors(strength) * factors(strength / 2, (1, 1, 3))
    gray = x.mean(dim=3, keepdim=True)
    x = gray + (x - gray) * factors(strength)  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * factors(strength)  # contrast
    return x.clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=1)
def _warn_if_bf16_is_emulated() -> None:
    """Log once when bf16 autocast runs on a CPU without native bf16 instructions (it
    works, but more slowly than float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return  # not Linux: cannot tell
    if not any(flag in flags for flag in ("avx512_bf16", "amx_bf16")):
        logger.warning(
            "train.bf16=true on a CPU without avx512_bf16/amx_bf16: bf16 is emulated and "
            "slower than float32; set train.bf16=false"
        )


def ms_params(cfg: ExperimentConfig) -> MSParams:
    """Multi-similarity parameters from the loss config."""
    loss = cfg.loss
    return MSParams(loss.alpha, loss.beta, loss.base, loss.mining_margin)


def compute_losses(
    model: GeoModel,
    encoders: nn.Module,
    batch: dict,
    cfg: ExperimentConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Forward pass and the weighted triangle loss of one batch (``loss`` + each term)."""
    params = ms_params(cfg)
    cached = bool(batch.get("cached", False))
    if cached:  # float16 trunk outputs (jitter baked in when the cache was built)
        ground = batch["ground"].to(device, non_blocking=True).float()
        aerial = batch["aerial"].to(device, non_blocking=True).float()
    else:
        ground = color_jitter(batch["ground"], cfg.data.color_jitter, generator)
        ground = model.ground.normalize(ground.to(device, non_blocking=True))
        aerial = model.aerial.normalize(batch["aerial"].to(device, non_blocking=True))
    # bf16 autocast on CUDA, and on CPUs (oneDNN bf16 kernels; worth it only where the
    # CPU has native bf16, e.g. AVX-512 BF16 or AMX: benchmarks/train_bench.py).
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.train.bf16)
    if cfg.train.bf16 and device.type == "cpu":
        _warn_if_bf16_is_emulated()
    with autocast:
        ground_emb, aerial_emb = encoders(ground, aerial, from_trunk=cached)
    ground_emb, aerial_emb = ground_emb.float(), aerial_emb.float()
    ground_cells = batch["ground_cells"].to(device)
    aerial_cells = batch["aerial_cells"].to(device)
    ground_rows = batch["ground_rows"].to(device)
    aerial_rows = batch["aerial_rows"].to(device)
    loss_cfg = cfg.loss
    rows = candidate_rows(
        torch.cat([ground_emb, aerial_emb]),
        torch.cat([ground_rows, aerial_rows]),
        model.prototypes,
        params,
        loss_cfg,
        generator,
    )
    prototypes = model.prototypes(rows)  # [K, D], sparse gradient in these rows

    def to_prototypes(anchors: torch.Tensor, anchor_rows: torch.Tensor) -> torch.Tensor:
        return prototype_term(anchors, anchor_rows, prototypes, rows, params, loss_cfg)

    terms = {
        "loss_ground_aerial": cross_modal_loss(
            ground_emb, ground_cells, aerial_emb, aerial_cells, params
        ),
        "loss_ground_prototype": to_prototypes(ground_emb, ground_rows),
        "loss_aerial_prototype": to_prototypes(aerial_emb, aerial_rows),
    }
    terms["loss"] = (
        loss_cfg.weight_ground_aerial * terms["loss_ground_aerial"]
        + loss_cfg.weight_ground_prototype * terms["loss_ground_prototype"]
        + loss_cfg.weight_aerial_prototype * terms["loss_aerial_prototype"]
    )
    terms["touched_rows"] = torch.tensor(float(len(rows)))
    return terms


def train_step(
    model: GeoModel,
    encoders: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    batch: dict,
    cfg: ExperimentConfig,
    generator: torch.Generator,
    device: torch.device,
    dist_info: DistInfo,
) -> dict[str, float]:
    """Losses, backward, gradient sync/clipping and both optimiser steps -> scalar logs."""
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    terms = compute_losses(model, encoders, batch, cfg, generator, device)
    terms["loss"].backward()
    if dist_info.enabled:
        all_reduce_sparse_grad(model.prototypes.embedding.weight, dist_info.world_size)
    if cfg.optim.grad_clip > 0:
        parameters = [p for p in encoders.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(parameters, cfg.optim.grad_clip)
    for optimizer in optimizers.values():
        optimizer.step()
    names = list(terms)
    values = torch.stack([terms[n].detach().float().to(device) for n in names])
    values = all_reduce_mean(values, dist_info).cpu()
    return {name: float(value) for name, value in zip(names, values, strict=True)}
