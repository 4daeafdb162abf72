"""Optimisers: AdamW for the encoders, a sparse optimiser for the prototype table."""

from __future__ import annotations

import math

import torch
from torch import nn

from geocells.train.config import OptimConfig


class RowAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad for sparse embedding gradients: one float of state per row.

    For each touched row r with gradient g_r: ``G_r += mean(g_r**2)``,
    ``w_r -= lr * g_r / (sqrt(G_r) + eps)``. Untouched rows and their state are not read.
    The state and the update are float32 whatever the table's dtype (bfloat16 tables
    receive the rounded update).
    """

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        """Apply one update from the (sparse) gradients."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if not grad.is_sparse:
                    raise ValueError(
                        "RowAdagrad needs sparse gradients (nn.Embedding(sparse=True))"
                    )
                grad = grad.coalesce()
                rows, values = grad.indices()[0], grad.values().float()
                state = self.state[param]
                if "sum" not in state:
                    state["sum"] = torch.zeros(param.shape[0], device=param.device)
                state["sum"].index_add_(0, rows, values.pow(2).mean(dim=1))
                scale = group["lr"] / (state["sum"][rows].sqrt() + group["eps"])
                param.index_add_(0, rows, (-values * scale[:, None]).to(param.dtype))
        return None


def encoder_optimizer(modules: list[nn.Module], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over trainable encoder parameters; no weight decay on biases and norms."""
    decay, no_decay = [], []
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad:
                (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def prototype_optimizer(embedding: nn.Embedding, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SparseAdam (2 moments per weight) or RowAdagrad (1 float per row) for the table."""
    if cfg.prototype_optimizer == "sparse_adam":
        return torch.optim.SparseAdam([embedding.weight], lr=cfg.prototype_lr)
    if cfg.prototype_optimizer == "row_adagrad":
        return RowAdagrad([embedding.weight], lr=cfg.prototype_lr)
    raise ValueError(
        f"optim.prototype_optimizer {cfg.prototype_optimizer!r}; valid: sparse_adam, row_adagrad"
    )


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine decay or constant."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or total_steps <= cfg.warmup_steps:
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizers: list[torch.optim.Optimizer], base_lrs: list[float], factor: float) -> None:
    """Scale each optimiser's groups to ``base_lr * factor``."""
    for optimizer, base in zip(optimizers, base_lrs, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = base * factor
