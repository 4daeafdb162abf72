"""Multi-similarity loss (Wang et al., CVPR 2019) between anchors and references.

For anchor ``i`` with similarities ``S_ik`` to references ``k`` (positives ``P_i``,
negatives ``N_i``), pairs are mined first: a negative is kept if
``S_ik + eps > min_{j in P_i} S_ij``, a positive if ``S_ik - eps < max_{j in N_i} S_ij``.
Then

    L_i = 1/alpha * log(1 + sum_{k in P_i} exp(-alpha (S_ik - lambda)))
        + 1/beta  * log(1 + sum_{k in N_i} exp( beta (S_ik - lambda)))

averaged over anchors. Here references are another modality (ground<->aerial) or the
prototype table (ground/aerial -> prototype); prototype candidates are chosen by
``geocells.train.negatives``.

The prototype terms can instead be a normalised softmax over the candidate prototypes
(``loss.prototype_loss = softmax``; CosFace, Wang et al. CVPR 2018): with scale ``s`` and
additive margin ``m`` on the positive,

    L_i = -log( exp(s (S_ip - m)) / (exp(s (S_ip - m)) + sum_{k != p} exp(s S_ik)) )

i.e. "similar to its own cell's prototype and dissimilar to all others" with every
candidate pushing, not only the mined ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geocells.train.config import LossConfig


@dataclass(frozen=True)
class MSParams:
    """Multi-similarity hyper-parameters: alpha, beta, lambda (base) and mining epsilon."""

    alpha: float = 2.0
    beta: float = 50.0
    base: float = 0.5
    margin: float = 0.1


def _log1p_sum_exp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 + sum_k mask * exp(values)) per row, numerically stable: [A, R] -> [A]."""
    masked = values.masked_fill(~mask, float("-inf"))
    zeros = values.new_zeros(values.shape[0], 1)
    return torch.logsumexp(torch.cat([zeros, masked], dim=1), dim=1)


def multi_similarity_loss(
    similarity: torch.Tensor, positive: torch.Tensor, params: MSParams, mine: bool = True
) -> torch.Tensor:
    """similarity: [A, R] cosine similarities, positive: bool [A, R] -> scalar loss.

    Anchors without any positive contribute only their negative term; anchors whose pairs
    are all mined away contribute 0 (and still count in the mean).
    """
    if similarity.shape != positive.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} vs mask {tuple(positive.shape)}")
    if similarity.shape[0] == 0:
        return similarity.sum() * 0.0
    negative = ~positive
    if mine:
        with torch.no_grad():
            inf = torch.finfo(similarity.dtype).max
            hardest_positive = similarity.masked_fill(negative, inf).amin(dim=1, keepdim=True)
            hardest_negative = similarity.masked_fill(positive, -inf).amax(dim=1, keepdim=True)
            negative = negative & (similarity + params.margin > hardest_positive)
            positive = positive & (similarity - params.margin < hardest_negative)
    positive_term = _log1p_sum_exp(-params.alpha * (similarity - params.base), positive)
    negative_term = _log1p_sum_exp(params.beta * (similarity - params.base), negative)
    return (positive_term / params.alpha + negative_term / params.beta).mean()


def cross_modal_loss(
    first: torch.Tensor,
    first_labels: torch.Tensor,
    second: torch.Tensor,
    second_labels: torch.Tensor,
    params: MSParams,
) -> torch.Tensor:
    """Symmetric MS loss between two modalities: first [A, D] <-> second [R, D] (unit).

    Labels are int64 cell ids; a pair is positive when the labels are equal. The loss is
    the mean of first->second and second->first (each anchor mines its own pairs).
    """
    similarity = first @ second.T  # [A, R]
    positive = first_labels[:, None] == second_labels[None, :]
    forward = multi_similarity_loss(similarity, positive, params)
    backward = multi_similarity_loss(similarity.T, positive.T, params)
    return 0.5 * (forward + backward)


def prototype_loss(
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    candidates: torch.Tensor,
    candidate_rows: torch.Tensor,
    params: MSParams,
) -> torch.Tensor:
    """MS loss of anchors [A, D] against prototype candidates [R, D] (both unit).

    ``anchor_rows`` [A]: the prototype row of each anchor's cell; ``candidate_rows`` [R]:
    the table rows of the candidates, which must include every anchor's own row.
    """
    similarity, positive = _prototype_similarity(anchors, anchor_rows, candidates, candidate_rows)
    return multi_similarity_loss(similarity, positive, params)


def _prototype_similarity(
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    candidates: torch.Tensor,
    candidate_rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities [A, R] and the positive mask [A, R] (every anchor has one)."""
    similarity = anchors @ candidates.T
    positive = anchor_rows[:, None] == candidate_rows[None, :]
    if not bool(positive.any(dim=1).all()):
        raise ValueError("prototype candidates miss the positive row of some anchor")
    return similarity, positive


def prototype_softmax_loss(
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    candidates: torch.Tensor,
    candidate_rows: torch.Tensor,
    scale: float,
    margin: float,
) -> torch.Tensor:
    """Normalised-softmax (CosFace) loss of anchors [A, D] over candidates [R, D] -> scalar.

    ``candidate_rows`` must be unique and include every anchor's own row (its class).
    """
    similarity, positive = _prototype_similarity(anchors, anchor_rows, candidates, candidate_rows)
    if len(similarity) == 0:
        return similarity.sum() * 0.0
    logits = scale * (similarity - margin * positive.to(similarity.dtype))
    return F.cross_entropy(logits, positive.to(torch.int8).argmax(dim=1))


def prototype_term(
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    candidates: torch.Tensor,
    candidate_rows: torch.Tensor,
    params: MSParams,
    cfg: LossConfig,
) -> torch.Tensor:
    """The configured prototype loss (``cfg.prototype_loss``: ``ms`` or ``softmax``) -> scalar."""
    if cfg.prototype_loss == "softmax":
        return prototype_softmax_loss(
            anchors, anchor_rows, candidates, candidate_rows, cfg.softmax_scale, cfg.softmax_margin
        )
    return prototype_loss(anchors, anchor_rows, candidates, candidate_rows, params)
