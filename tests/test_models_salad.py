"""SALAD: transport plan marginals, dustbin, permutation invariance, shapes."""

import math

import pytest
import torch

from geocells.models.salad import SALAD, log_sinkhorn


def _salad(in_dim=16, clusters=4, iters=3) -> SALAD:
    torch.manual_seed(0)
    return SALAD(
        in_dim, clusters=clusters, cluster_dim=8, global_dim=6, hidden_dim=32, sinkhorn_iters=iters
    )


def test_transport_plan_marginals():
    torch.manual_seed(1)
    batch, clusters, tokens = 2, 5, 12
    scores = torch.randn(batch, clusters + 1, tokens) * 3
    log_rows = torch.tensor([0.0] * clusters + [math.log(tokens - clusters)])
    plan = log_sinkhorn(scores, log_rows, iters=200).exp()
    # every token distributes exactly its unit mass over the clusters and the dustbin
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(batch, tokens))
    # every cluster receives mass 1, the dustbin the rest (N - m)
    expected_rows = torch.tensor([1.0] * clusters + [tokens - clusters]).expand(batch, -1)
    torch.testing.assert_close(plan.sum(dim=2), expected_rows, atol=1e-4, rtol=1e-4)
    # few iterations: columns are still exact (the last update is over columns)
    few = log_sinkhorn(scores, log_rows, iters=1).exp()
    torch.testing.assert_close(few.sum(dim=1), torch.ones(batch, tokens))


def test_dustbin_absorbs_tokens_that_fit_no_cluster():
    clusters, tokens = 3, 10
    scores = torch.zeros(1, clusters + 1, tokens)
    scores[0, :clusters, :3] = 5.0  # tokens 0-2 like the clusters
    scores[0, :clusters, 3:] = -5.0  # tokens 3-9 like no cluster
    log_rows = torch.tensor([0.0] * clusters + [math.log(tokens - clusters)])
    plan = log_sinkhorn(scores, log_rows, iters=50).exp()[0]
    assert plan[clusters, 3:].min() > 0.95  # unwanted tokens go to the dustbin
    assert plan[:clusters, :3].sum() > 0.9 * clusters  # the clusters' mass comes from 0-2


def test_salad_output_shape_and_norm():
    salad = _salad()
    tokens, global_token = torch.randn(3, 20, 16), torch.randn(3, 16)
    out = salad(tokens, global_token)
    assert out.shape == (3, 6 + 4 * 8) == (3, salad.out_dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_salad_is_invariant_to_token_order():
    salad = _salad().eval()
    tokens, global_token = torch.randn(2, 25, 16), torch.randn(2, 16)
    permuted = tokens[:, torch.randperm(25)]
    torch.testing.assert_close(salad(tokens, global_token), salad(permuted, global_token))


def test_salad_depends_on_tokens_and_global_token():
    salad = _salad().eval()
    tokens, global_token = torch.randn(1, 25, 16), torch.randn(1, 16)
    base = salad(tokens, global_token)
    assert not torch.allclose(base, salad(tokens + torch.randn_like(tokens), global_token))
    assert not torch.allclose(base, salad(tokens, global_token + 1.0))


def test_salad_needs_more_tokens_than_clusters():
    salad = _salad(clusters=4)
    with pytest.raises(ValueError, match="more tokens than clusters"):
        salad(torch.randn(1, 4, 16), torch.randn(1, 16))
