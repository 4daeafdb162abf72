"""Encoders, prototype table (sparse updates) and GeoModel save/load."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from geocells.models import PrototypeTable, build_model, load_model, save_model
from geocells.train.config import experiment_config
from geocells.train.optim import RowAdagrad

CELLS = np.array([11, 23, 35, 47, 59, 71], dtype=np.uint64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(experiment_config("tiny"), CELLS)


def test_encoders_give_unit_embeddings(model):
    for encoder in (model.ground, model.aerial):
        x = torch.randn(3, 3, encoder.input_size, encoder.input_size)
        out = encoder(x)
        assert out.shape == (3, model.dim)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert model.ground.backbone is not model.aerial.backbone  # separate weights


def test_preprocess_accepts_arrays_and_pil_and_rejects_bad_images(model):
    encoder = model.ground
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    batch = encoder.preprocess([array, Image.fromarray(array).convert("RGBA")])
    assert batch.shape == (2, 3, encoder.input_size, encoder.input_size)
    torch.testing.assert_close(batch[0], batch[1])
    gray = np.full((encoder.input_size,) * 2 + (3,), 128, np.uint8)
    expected = (128 / 255 - torch.tensor(encoder.mean)) / torch.tensor(encoder.std)
    torch.testing.assert_close(encoder.preprocess([gray])[0, :, 0, 0], expected)
    with pytest.raises(ValueError, match="image 1: expected uint8 HxWx3"):
        encoder.preprocess([array, array.astype(np.float32)])
    codes = encoder.encode([array] * 3, batch_size=2)
    assert codes.dtype == np.float32 and codes.shape == (3, model.dim)


def test_save_and_load_roundtrip(model, tmp_path):
    path = save_model(model, tmp_path / "run" / "checkpoints" / "last.safetensors")
    loaded = load_model(tmp_path / "run")
    assert not loaded.training
    np.testing.assert_array_equal(loaded.prototypes.cells, CELLS)
    assert loaded.prototypes.level == model.prototype_level == 15
    assert loaded.card == model.card
    images = [np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)]
    np.testing.assert_allclose(loaded.aerial.encode(images), model.aerial.encode(images))
    torch.testing.assert_close(loaded.prototypes.normalized(), model.prototypes.normalized())
    assert load_model(path).dim == model.dim


def test_load_rejects_foreign_and_incomplete_checkpoints(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a geocells model checkpoint"):
        load_model(foreign)
    path = save_model(model, tmp_path / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    del state["ground.projection.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata=metadata)
    with pytest.raises(ValueError, match=r"ground\.projection\.weight"):
        load_model(broken)


@pytest.mark.parametrize("optimizer", ["sparse_adam", "row_adagrad"])
def test_sparse_update_touches_only_sampled_rows(optimizer):
    torch.manual_seed(0)
    table = PrototypeTable(np.arange(1, 101, dtype=np.uint64), level=15, dim=8)
    before = table.embedding.weight.detach().clone()
    weight = table.embedding.weight
    opt = (
        torch.optim.SparseAdam([weight], lr=0.1)
        if optimizer == "sparse_adam"
        else RowAdagrad([weight], lr=0.1)
    )
    rows = torch.tensor([3, 17, 17, 64])
    (table(rows) @ torch.randn(8)).sum().backward()
    assert weight.grad.is_sparse
    assert set(weight.grad.coalesce().indices()[0].tolist()) == {3, 17, 64}
    opt.step()
    changed = (weight.detach() != before).any(dim=1)
    assert set(torch.nonzero(changed).flatten().tolist()) == {3, 17, 64}
    for state in opt.state[weight].values():
        if isinstance(state, torch.Tensor) and state.ndim >= 1:
            touched = state.reshape(len(state), -1).ne(0).any(dim=1)
            assert set(torch.nonzero(touched).flatten().tolist()) == {3, 17, 64}


def test_prototype_rows_of_cells():
    table = PrototypeTable(CELLS, level=15, dim=4)
    np.testing.assert_array_equal(table.rows_of(CELLS[[4, 0]]), [4, 0])
    with pytest.raises(ValueError, match="not in the level-15 prototype table"):
        table.rows_of(np.array([12], np.uint64))
    with pytest.raises(ValueError, match="sorted and unique"):
        PrototypeTable(CELLS[::-1].copy(), level=15, dim=4)
    torch.testing.assert_close(table.normalized().norm(dim=1), torch.ones(len(CELLS)))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_table_trains_like_float32(dtype):
    """A bfloat16/float16 table halves the weight memory and follows the float32 updates."""
    cells = np.arange(1, 201, dtype=np.uint64)
    torch.manual_seed(0)
    full = PrototypeTable(cells, level=15, dim=16, init_std=0.2)
    half = PrototypeTable(cells, level=15, dim=16, init_std=0.2, dtype=dtype)
    with torch.no_grad():
        half.embedding.weight.copy_(full.embedding.weight)
    assert half.embedding.weight.dtype == getattr(torch, dtype)
    assert half.embedding.weight.element_size() == 2
    target = torch.nn.functional.normalize(torch.randn(16), dim=0)
    rows = torch.tensor([5, 9, 120])
    optimizers = [RowAdagrad([t.embedding.weight], lr=0.05) for t in (full, half)]
    for _ in range(30):
        for table, opt in zip((full, half), optimizers, strict=True):
            opt.zero_grad()
            (-(table(rows) @ target)).sum().backward()
            opt.step()
    got, want = half.normalized(rows), full.normalized(rows)
    assert got.dtype == torch.float32
    assert (want @ target).min() > 0.9  # the rows did move towards the target
    torch.testing.assert_close(got, want, atol=0.03, rtol=0)
    untouched = torch.tensor([0, 100])
    torch.testing.assert_close(
        half.normalized(untouched), full.normalized(untouched), atol=0.01, rtol=0
    )


def test_prototype_table_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="int8"):
        PrototypeTable(CELLS, level=15, dim=4, dtype="int8")
