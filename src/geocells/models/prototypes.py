"""Prototype table: one learned vector per level-Lp S2 cell of the region, sparse updates.

Rows are an ``nn.Embedding(P, D, sparse=True)``: a step that looks up ``K`` rows produces
a sparse gradient with those ``K`` rows only, so a sparse optimizer (``SparseAdam``, or
the leaner ``RowAdagrad`` in ``geocells.train.optim``) touches only them.
Memory per prototype at D=256: 1,024 B float32 weights (512 B with ``dtype`` bfloat16 or
float16) + 8 B cell id; training adds 2,048 B (SparseAdam moments) or 4 B (RowAdagrad) of
optimizer state. Looked-up rows are converted to float32 before any arithmetic.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PrototypeTable(nn.Module):
    """``cells`` (uint64, sorted, unique) of one S2 ``level`` -> unit vectors ``[P, D]``.

    forward(rows: int64 [K]) -> [K, D] unit vectors (gradients are sparse in the rows).
    """

    def __init__(
        self,
        cells: np.ndarray,
        level: int,
        dim: int,
        init_std: float = 1.0,
        dtype: str | torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        dtype = table_dtype(dtype)
        cells = np.asarray(cells)
        if cells.dtype != np.uint64 or cells.ndim != 1:
            raise ValueError(f"prototype cells must be a 1-D uint64 array, got {cells.dtype}")
        if len(cells) == 0:
            raise ValueError("prototype table needs at least one cell")
        if np.any(cells[1:] <= cells[:-1]):
            raise ValueError("prototype cells must be sorted and unique")
        self.level = int(level)
        self.embedding = nn.Embedding(len(cells), dim, sparse=True, dtype=dtype)
        nn.init.normal_(self.embedding.weight, std=init_std)
        # S2 ids as int64 bits (torch has no uint64 arithmetic); view back with .cells.
        self.register_buffer("cell_ids", torch.from_numpy(cells.view(np.int64).copy()))

    def __len__(self) -> int:
        return self.embedding.num_embeddings

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.embedding.embedding_dim

    @property
    def cells(self) -> np.ndarray:
        """uint64 [P] S2 cell ids, sorted; row ``i`` is the prototype of ``cells[i]``."""
        return self.cell_ids.cpu().numpy().view(np.uint64)

    def find_rows(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [N], found bool [N]) of cells; rows of absent cells are meaningless."""
        table = self.cells
        cells = np.asarray(cells, dtype=np.uint64)
        rows = np.minimum(np.searchsorted(table, cells), len(table) - 1)
        return rows.astype(np.int64), table[rows] == cells

    def rows_of(self, cells: np.ndarray) -> np.ndarray:
        """Row index of each cell; cells not in the table raise ``ValueError``."""
        cells = np.asarray(cells, dtype=np.uint64)
        rows, found = self.find_rows(cells)
        absent = ~found
        if absent.any():
            listed = ", ".join(f"{int(c):#x}" for c in cells[absent][:5])
            raise ValueError(
                f"{int(absent.sum())} cells are not in the level-{self.level} prototype "
                f"table (outside the region or another level): {listed}"
            )
        return rows

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """rows: int64 [K] -> [K, D] unit vectors."""
        return F.normalize(self.embedding(rows).float(), dim=1)

    def normalized(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """All rows (or ``rows``) as unit vectors, ``[P, D]``, without gradients."""
        with torch.no_grad():
            weight = self.embedding.weight if rows is None else self.embedding.weight[rows]
            return F.normalize(weight.float(), dim=1)


TABLE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def table_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Storage dtype of the prototype weights from its name; ValueError for others."""
    if isinstance(dtype, torch.dtype) and dtype in TABLE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in TABLE_DTYPES:
        return TABLE_DTYPES[dtype]
    raise ValueError(f"prototype table dtype {dtype!r}; valid: {', '.join(TABLE_DTYPES)}")
