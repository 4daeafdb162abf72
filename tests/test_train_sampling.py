"""Batch plans (distinct cells, determinism), big-table negatives, presets."""

import numpy as np
import pytest
import torch

from geocells.config import ConfigError
from geocells.geo import cell_neighbors, latlng_to_cell
from geocells.models import Encoder, PrototypeTable
from geocells.train.config import LossConfig, experiment_config
from geocells.train.loss import MSParams
from geocells.train.negatives import candidate_rows, neighbor_rows
from geocells.train.sampling import distinct_cell_batches


def test_batches_have_distinct_cells_and_depend_only_on_the_seed():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 30, 500).astype(np.uint64)  # many images share a cell
    batches = distinct_cell_batches(cells, 16, np.random.default_rng(7))
    assert len(batches) >= 25
    for batch in batches:
        assert len(batch) == 16 and len(set(cells[batch].tolist())) == 16
    used = np.concatenate(batches)
    assert len(np.unique(used)) == len(used)  # no image twice in an epoch
    again = distinct_cell_batches(cells, 16, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_big_tables_use_neighbours_and_random_rows():
    lat, lon = np.meshgrid(np.linspace(47.0, 47.05, 30), np.linspace(8.0, 8.07, 30))
    cells = np.unique(latlng_to_cell(lat.ravel(), lon.ravel(), 15))
    table = PrototypeTable(cells, level=15, dim=8)
    middle = len(cells) // 2
    near = neighbor_rows(table, np.array([middle]), rings=1)
    expected = {middle, *table.find_rows(cell_neighbors(cells[[middle]]).ravel())[0].tolist()}
    assert set(near.tolist()) == expected and len(expected) == 5
    anchors = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    anchor_rows = torch.tensor([middle, 0])
    rows = candidate_rows(
        anchors,
        anchor_rows,
        table,
        MSParams(),
        LossConfig(all_negatives_max=10, random_negatives=7, neighbor_rings=1, chunk_size=64),
        generator=torch.Generator().manual_seed(0),
    )
    assert set(expected) | {0} <= set(rows.tolist())
    assert len(rows) <= len(expected) + 5 + 7  # + row 0 and its 4 neighbours + the sample
    assert torch.equal(rows, torch.unique(rows))


def test_presets_resolve_and_dinov2_base_builds():
    for name in ("cpu-small", "tiny", "dinov2-base"):
        cfg = experiment_config(name)
        assert cfg.data.cell_level == 16 and cfg.data.prototype_level == 15
    cfg = experiment_config("dinov2-base", ["model.backbone_kwargs={img_size: 322, depth: 1}"])
    encoder = Encoder(cfg.model, cfg.model.input_size)  # one encoder is enough here
    assert encoder.input_size == 322 and encoder.num_tokens == 23 * 23
    trainable = {n for n, p in encoder.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.blocks.0.", "model.norm.")) for n in trainable)
    assert encoder.projection.weight.shape == (256, 256 + 64 * 128)


def test_bad_config_values_are_rejected():
    with pytest.raises(ConfigError, match="prototype_level"):
        experiment_config("tiny", ["data.prototype_level=17"])
    with pytest.raises(ConfigError, match="row_adagrad"):
        experiment_config("tiny", ["optim.prototype_optimizer=sgd"])


def test_color_jitter_is_seeded_and_bounded():
    from geocells.train.step import color_jitter

    pixels = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(color_jitter(pixels, 0.0, torch.Generator()), pixels)
    first = color_jitter(pixels, 0.3, torch.Generator().manual_seed(3))
    again = color_jitter(pixels, 0.3, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and first.dtype == torch.uint8
    assert not torch.equal(first, pixels)
    # mild: no image changes its mean brightness by more than ~50 %
    ratio = first.float().mean(dim=(1, 2, 3)) / pixels.float().mean(dim=(1, 2, 3))
    assert bool(((ratio > 0.5) & (ratio < 1.5)).all())
