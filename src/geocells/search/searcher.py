"""The one search interface the Localizer, serve and eval call, whatever the backend."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Searcher(Protocol):
    """Top-k cells of query embeddings: ``CellSearcher`` (exact or faiss IVF-PQ, in this
    process) or ``MilvusSearcher`` (a Milvus collection, past one machine)."""

    backend: str

    @property
    def kappa(self) -> float:
        """Weight of the prototype part in ``score = sim_A + κ · sim_P``."""
        ...

    @property
    def num_cells(self) -> int:
        """Number of database rows."""
        ...

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        ...

    def search(self, queries: np.ndarray, top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Queries float32 [Q, D] -> (scores float32 [Q, k], rows int64 [Q, k]), best first;
        row -1 and score -inf where fewer than k cells were found."""
        ...

    def memory_bytes(self) -> int:
        """Bytes this process holds for the search beyond the memmaps."""
        ...
