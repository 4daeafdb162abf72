"""SALAD: optimal-transport aggregation of local features (Izquierdo & Civera, arXiv 2311.15937).

Written from the paper. Each local token ``f_i`` gets a score ``s_i`` for ``m`` clusters
(a small MLP) plus one shared learnable dustbin score; a log-domain Sinkhorn solves the
entropy-regularised transport between tokens (mass 1 each) and clusters (mass 1 each,
the dustbin takes the remaining ``N - m``). Reduced token features (``l`` dims) are
summed per cluster with the transport weights, L2-normalised per cluster, flattened and
concatenated with a reduced global token (``g`` dims); the result is L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def log_sinkhorn(scores: torch.Tensor, log_rows: torch.Tensor, iters: int) -> torch.Tensor:
    """Log transport plan between rows (clusters + dustbin) and columns (tokens).

    scores: [B, R, N] log-affinities; log_rows: [R] log row masses, which must sum to N
    (every column has mass 1). Returns log P: [B, R, N]; columns sum to exactly 1 after the
    last iteration, rows to ``exp(log_rows)`` approximately (exactly as iters grows).
    """
    batch, _, tokens = scores.shape
    log_cols = scores.new_zeros(tokens)
    u = scores.new_zeros(batch, scores.shape[1])
    v = scores.new_zeros(batch, tokens)
    for _ in range(iters):
        u = log_rows[None] - torch.logsumexp(scores + v[:, None, :], dim=2)
        v = log_cols[None] - torch.logsumexp(scores + u[:, :, None], dim=1)
    return scores + u[:, :, None] + v[:, None, :]


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, out_dim)
    )


class SALAD(nn.Module):
    """Sinkhorn Algorithm for Locally Aggregated Descriptors.

    forward(tokens: [B, N, C], global_token: [B, C]) -> [B, g + m * l], L2-normalised.
    """

    def __init__(
        self,
        in_dim: int,
        clusters: int = 64,
        cluster_dim: int = 128,
        global_dim: int = 256,
        hidden_dim: int = 512,
        sinkhorn_iters: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if sinkhorn_iters < 1:
            raise ValueError(f"sinkhorn_iters must be >= 1, got {sinkhorn_iters}")
        self.clusters = clusters
        self.cluster_dim = cluster_dim
        self.global_dim = global_dim
        self.sinkhorn_iters = sinkhorn_iters
        self.score = _mlp(in_dim, hidden_dim, clusters, dropout)
        self.reduce = _mlp(in_dim, hidden_dim, cluster_dim, dropout)
        self.global_reduce = _mlp(in_dim, hidden_dim, global_dim, 0.0)
        self.dustbin = nn.Parameter(torch.tensor(1.0))

    @property
    def out_dim(self) -> int:
        """Length of the aggregated descriptor: g + m * l."""
        return self.global_dim + self.clusters * self.cluster_dim

    def transport(self, tokens: torch.Tensor) -> torch.Tensor:
        """Log transport plan, tokens [B, N, C] -> [B, m + 1, N] (last row: dustbin)."""
        batch, num_tokens, _ = tokens.shape
        if num_tokens <= self.clusters:
            raise ValueError(
                f"SALAD needs more tokens than clusters: {num_tokens} tokens <= "
                f"{self.clusters} clusters (raise the input size, use an earlier "
                "feature stage, or lower model.clusters)"
            )
        scores = self.score(tokens).transpose(1, 2)  # [B, m, N]
        dustbin = self.dustbin.expand(batch, 1, num_tokens)
        scores = torch.cat([scores, dustbin], dim=1)  # [B, m + 1, N]
        log_rows = torch.cat(
            [
                scores.new_zeros(self.clusters),
                scores.new_tensor([float(num_tokens - self.clusters)]).log(),
            ]
        )
        return log_sinkhorn(scores, log_rows, self.sinkhorn_iters)

    def forward(self, tokens: torch.Tensor, global_token: torch.Tensor) -> torch.Tensor:
        """tokens: [B, N, C], global_token: [B, C] -> [B, g + m * l] (unit norm)."""
        plan = self.transport(tokens)[:, : self.clusters].exp()  # [B, m, N]
        features = self.reduce(tokens)  # [B, N, l]
        aggregated = torch.einsum("bmn,bnl->bml", plan, features)  # [B, m, l]
        aggregated = F.normalize(aggregated, dim=2).flatten(1)  # [B, m * l]
        global_feature = F.normalize(self.global_reduce(global_token), dim=1)  # [B, g]
        return F.normalize(torch.cat([global_feature, aggregated], dim=1), dim=1)
