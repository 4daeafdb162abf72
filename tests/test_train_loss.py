"""Multi-similarity loss on hand-made embeddings, and prototype candidate mining."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geocells.models import PrototypeTable
from geocells.train.config import LossConfig
from geocells.train.loss import (
    MSParams,
    cross_modal_loss,
    multi_similarity_loss,
    prototype_loss,
    prototype_softmax_loss,
    prototype_term,
)
from geocells.train.negatives import candidate_rows, mined_rows

PARAMS = MSParams(alpha=2.0, beta=50.0, base=0.5, margin=0.1)


def _unit(angles_deg):
    angles = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def _ms_by_hand(pos_sims, neg_sims, a=2.0, b=50.0, lam=0.5):
    pos = math.log(1 + sum(math.exp(-a * (s - lam)) for s in pos_sims)) / a
    neg = math.log(1 + sum(math.exp(b * (s - lam)) for s in neg_sims)) / b
    return pos + neg


def test_single_anchor_value_by_hand():
    anchor = _unit([0.0])
    refs = _unit([20.0, 60.0, 80.0])  # positive, then two negatives
    positive = torch.tensor([[True, False, False]])
    cos = [math.cos(math.radians(d)) for d in (20, 60, 80)]
    # mining: negatives need s + 0.1 > cos20 = 0.94; cos60 = 0.5, cos80 = 0.17 -> none kept
    expected_mined = 0.0
    loss = multi_similarity_loss(anchor @ refs.T, positive, PARAMS)
    assert loss.item() == pytest.approx(expected_mined, abs=1e-12)
    # without mining every pair counts
    unmined = multi_similarity_loss(anchor @ refs.T, positive, PARAMS, mine=False)
    assert unmined.item() == pytest.approx(_ms_by_hand([cos[0]], cos[1:]), rel=1e-9)


def test_hard_negative_is_mined_and_counted():
    anchors = _unit([0.0, 90.0])
    refs = _unit([50.0, 45.0, 170.0])
    positive = torch.tensor([[True, False, False], [False, True, False]])
    c = lambda d: math.cos(math.radians(d))  # noqa: E731
    # anchor 0: pos 50 deg (0.643); negatives 45 deg (0.707, kept), 170 deg (-0.985, dropped);
    # the positive is kept since 0.643 - 0.1 < 0.707.
    first = _ms_by_hand([c(50)], [c(45)])
    # anchor 1: pos at 45 deg away (0.707); negs 40 deg (0.766, kept), 80 deg (0.174, dropped)
    second = _ms_by_hand([c(45)], [c(40)])
    loss = multi_similarity_loss(anchors @ refs.T, positive, PARAMS)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-9)


def test_matches_pytorch_metric_learning_without_mining():
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    torch.manual_seed(0)
    anchors = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    refs = F.normalize(torch.randn(9, 8, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    ref_labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8])
    reference = MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)(
        anchors, labels, ref_emb=refs, ref_labels=ref_labels
    )
    ours = multi_similarity_loss(
        anchors @ refs.T, labels[:, None] == ref_labels[None], PARAMS, mine=False
    )
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)


def test_loss_falls_when_pairs_align():
    torch.manual_seed(0)
    ground = F.normalize(torch.randn(8, 16), dim=1)
    labels = torch.arange(8)
    aligned = cross_modal_loss(ground, labels, ground, labels, PARAMS)
    shuffled = cross_modal_loss(ground, labels, ground[torch.randperm(8)], labels, PARAMS)
    assert aligned.item() < shuffled.item()


def test_prototype_loss_requires_positive_rows():
    anchors = _unit([0.0, 30.0]).float()
    with pytest.raises(ValueError, match="miss the positive row"):
        prototype_loss(
            anchors, torch.tensor([0, 5]), _unit([0.0, 10.0]).float(), torch.tensor([0, 1]), PARAMS
        )


def test_mined_rows_match_brute_force_and_chunking():
    torch.manual_seed(0)
    table = PrototypeTable(np.arange(1, 301, dtype=np.uint64), level=15, dim=4)
    anchors = F.normalize(torch.randn(5, 4), dim=1)
    anchor_rows = torch.tensor([0, 10, 20, 30, 40])
    similarity = anchors @ table.normalized().T
    own = similarity[torch.arange(5), anchor_rows][:, None]
    hard = similarity + PARAMS.margin > own
    hard[torch.arange(5), anchor_rows] = False
    expected = torch.nonzero(hard.any(dim=0)).flatten()
    for chunk in (7, 64, 1000):
        found = mined_rows(anchors, anchor_rows, table, PARAMS, chunk)
        assert torch.equal(torch.sort(found).values, expected)
    cfg = LossConfig(all_negatives_max=1000, random_negatives=10, neighbor_rings=1, chunk_size=64)
    rows = candidate_rows(anchors, anchor_rows, table, PARAMS, cfg, torch.Generator())
    assert set(rows.tolist()) == set(expected.tolist()) | set(anchor_rows.tolist())
    # the loss over the candidates equals the loss over the whole table
    full = prototype_loss(anchors, anchor_rows, table.normalized(), torch.arange(300), PARAMS)
    part = prototype_loss(anchors, anchor_rows, table.normalized(rows), rows, PARAMS)
    assert part.item() == pytest.approx(full.item(), rel=1e-5)


def test_prototype_softmax_loss_value_by_hand():
    # cosines 0.8 (own cell) and 0.2: -log(e^{s(0.8-m)} / (e^{s(0.8-m)} + e^{0.2 s}))
    anchors = torch.tensor([[1.0, 0.0]])
    own = torch.tensor([0.8, math.sqrt(1 - 0.64)])
    other = torch.tensor([0.2, math.sqrt(1 - 0.04)])
    candidates = torch.stack([other, own])
    loss = prototype_softmax_loss(
        anchors, torch.tensor([7]), candidates, torch.tensor([3, 7]), scale=10.0, margin=0.1
    )
    expected = -math.log(math.exp(7.0) / (math.exp(7.0) + math.exp(2.0)))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_softmax_spans_the_whole_small_table_and_dispatches():
    generator = torch.Generator().manual_seed(0)
    table = PrototypeTable(np.arange(100, 140, dtype=np.uint64), level=15, dim=8)
    anchors = F.normalize(torch.randn(5, 8, generator=generator), dim=1)
    anchor_rows = torch.tensor([0, 3, 3, 9, 39])
    cfg = LossConfig(prototype_loss="softmax", softmax_all_max=40)
    rows = candidate_rows(anchors, anchor_rows, table, MSParams(), cfg, generator)
    assert rows.tolist() == list(range(40))
    # above softmax_all_max it falls back to the sampled candidates (positives included)
    small = LossConfig(
        prototype_loss="softmax",
        softmax_all_max=10,
        all_negatives_max=10,
        random_negatives=4,
        neighbor_rings=0,
    )
    sampled = candidate_rows(anchors, anchor_rows, table, MSParams(), small, generator)
    assert set(anchor_rows.tolist()) <= set(sampled.tolist()) and len(sampled) < 40
    vectors = table(rows)
    softmax_cfg = LossConfig(prototype_loss="softmax", softmax_scale=16.0, softmax_margin=0.2)
    softmax = prototype_term(anchors, anchor_rows, vectors, rows, MSParams(), softmax_cfg)
    direct = prototype_softmax_loss(anchors, anchor_rows, vectors, rows, 16.0, 0.2)
    ms = prototype_term(anchors, anchor_rows, vectors, rows, MSParams(), LossConfig())
    assert softmax.item() == pytest.approx(direct.item())
    assert ms.item() == pytest.approx(
        prototype_loss(anchors, anchor_rows, vectors, rows, MSParams()).item()
    )


def test_unknown_prototype_loss_is_refused():
    from geocells.config import ConfigError
    from geocells.train.config import experiment_config

    with pytest.raises(ConfigError, match=r"loss\.prototype_loss 'arcface'; valid: ms, softmax"):
        experiment_config("tiny", ["loss.prototype_loss=arcface"])
