"""Which prototype rows enter a step's loss (and so get gradients and optimizer updates).

Small tables (<= ``loss.all_negatives_max`` rows): every row is a candidate negative; the
rows that the multi-similarity mining would keep for some anchor are found in chunks
without gradients, and only those (plus the positives) are gathered with gradients.
Big tables: the positives, their S2 neighbours (``neighbor_rings`` rings) and a uniform
random sample of rows, mined the same way inside the loss.
"""

from __future__ import annotations

import numpy as np
import torch

from geocells.models.prototypes import PrototypeTable
from geocells.train.config import LossConfig
from geocells.train.loss import MSParams


@torch.no_grad()
def mined_rows(
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    table: PrototypeTable,
    params: MSParams,
    chunk_size: int,
) -> torch.Tensor:
    """Rows that some anchor mines as a negative, over the whole table in chunks -> int64 [K]."""
    positives = table(anchor_rows)  # [A, D]
    positive_similarity = (anchors * positives).sum(dim=1, keepdim=True)  # [A, 1]
    found = []
    for start in range(0, len(table), chunk_size):
        rows = torch.arange(start, min(start + chunk_size, len(table)), device=anchors.device)
        similarity = anchors @ table.normalized(rows).T  # [A, chunk]
        hard = similarity + params.margin > positive_similarity
        hard &= rows[None, :] != anchor_rows[:, None]
        found.append(rows[hard.any(dim=0)])
    return torch.cat(found)


def neighbor_rows(table: PrototypeTable, rows: np.ndarray, rings: int) -> np.ndarray:
    """Rows of the S2 edge neighbours (``rings`` times) of ``rows`` that are in the table."""
    from geocells.geo import cell_neighbors

    cells = table.cells[rows]
    seen = [cells]
    frontier = cells
    for _ in range(rings):
        frontier = np.unique(cell_neighbors(frontier).ravel())
        seen.append(frontier)
    neighbours, found = table.find_rows(np.unique(np.concatenate(seen)))
    return neighbours[found]


def candidate_rows(
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    table: PrototypeTable,
    params: MSParams,
    cfg: LossConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Sorted unique table rows for the prototype terms of one step (positives included).

    ``cfg``: ``all_negatives_max`` (tables up to this size: mine every row, in chunks of
    ``chunk_size``), else ``random_negatives`` random rows plus ``neighbor_rings`` rings.
    The softmax loss takes every row of tables up to ``softmax_all_max`` rows.
    """
    device = anchor_rows.device
    if cfg.prototype_loss == "softmax" and len(table) <= cfg.softmax_all_max:
        return torch.arange(len(table), device=device)
    if len(table) <= cfg.all_negatives_max:
        extra = mined_rows(anchors.detach(), anchor_rows, table, params, cfg.chunk_size)
    else:
        near = neighbor_rows(table, anchor_rows.cpu().numpy(), cfg.neighbor_rings)
        sample = torch.randint(len(table), (cfg.random_negatives,), generator=generator)
        extra = torch.cat([torch.from_numpy(near).to(device), sample.to(device)])
    return torch.unique(torch.cat([anchor_rows, extra]))
