"""torchrun support: process group set-up and the prototype-gradient all-reduce.

The encoders are wrapped in ``DistributedDataParallel``. The prototype table is not:
its gradient is sparse (only the rows a step touched), which NCCL cannot all-reduce,
so each rank all-gathers the touched rows and values and sums them itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and runs validation."""
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined (%s)", info.rank, world_size, backend)
    return info


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group (if this process joined one)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sparse_grad(weight: torch.Tensor, world_size: int) -> None:
    """Average the sparse gradient of ``weight`` over ranks (every rank gets the same)."""
    grad = weight.grad
    if grad is None:
        grad = torch.sparse_coo_tensor(
            torch.zeros(1, 0, dtype=torch.long, device=weight.device),
            weight.new_zeros(0, weight.shape[1]),
            weight.shape,
        )
    grad = grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    count = torch.tensor([len(rows)], device=weight.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded_rows = rows.new_zeros(longest)
    padded_rows[: len(rows)] = rows
    padded_values = values.new_zeros(longest, values.shape[1])
    padded_values[: len(rows)] = values
    all_rows = [torch.zeros_like(padded_rows) for _ in range(world_size)]
    all_values = [torch.zeros_like(padded_values) for _ in range(world_size)]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_values, padded_values)
    rows = torch.cat([r[: int(c.item())] for r, c in zip(all_rows, counts)])
    values = torch.cat([v[: int(c.item())] for v, c in zip(all_values, counts)])
    summed = torch.sparse_coo_tensor(
        rows[None], values / world_size, weight.shape, check_invariants=True
    )
    weight.grad = summed.coalesce()


def broadcast_from_main(tensor: torch.Tensor, info: DistInfo) -> None:
    """Overwrite ``tensor`` on every rank with rank 0's values."""
    if info.enabled:
        with torch.no_grad():
            dist.broadcast(tensor, src=0)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging)."""
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / info.world_size
