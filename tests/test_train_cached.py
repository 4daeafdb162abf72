"""A frozen pretrained trunk: block freezing, the trunk cache, and training on it."""

import json

import numpy as np
import pytest
import torch

from fixtures_train import train_tiny
from geocells.config import ConfigError
from geocells.data.dataset import Dataset
from geocells.data.images import load_image
from geocells.models import ModelConfig, build_model, load_model
from geocells.models.backbone import Backbone
from geocells.models.encoder import Encoder
from geocells.train import features
from geocells.train.config import experiment_config
from geocells.train.sampling import TrainPool

LITE0 = "package:efficientnet_lite0"
# cpu-pretrained, shrunk to the tiny world's 64 px images and a few steps
TINY_PRETRAINED = [
    "model.input_size=64", "model.aerial_input_size=64", "model.clusters=8",
    "model.cluster_dim=8", "model.global_dim=16", "model.hidden_dim=32", "model.dim=32",
    "model.backbone=tf_efficientnet_lite0", f"model.pretrained={LITE0}",
    "model.feature_stage=3", "model.trainable_blocks=1", "cache.enabled=true",
    "cache.ground_views=2", "cache.aerial_views=1", "cache.aerial_only_tiles=32",
    "cache.batch_size=16", "train.bf16=false",
]  # fmt: skip


def _lite0(**changes) -> ModelConfig:
    base = dict(backbone="tf_efficientnet_lite0", pretrained=LITE0, feature_stage=3,
                trainable_blocks=1, clusters=8, input_size=96)  # fmt: skip
    return ModelConfig(**{**base, **changes})


@pytest.mark.parametrize(
    "cfg",
    [
        _lite0(),
        _lite0(feature_stage=-1, trainable_blocks=2, input_size=128),
        ModelConfig(
            backbone="vit_small_patch14_dinov2",
            trainable_blocks=1,
            clusters=4,
            backbone_kwargs={"depth": 3, "embed_dim": 32, "num_heads": 2, "img_size": 70},
            input_size=70,
        ),
    ],
    ids=["lite0-stage3", "lite0-head", "vit"],
)
def test_trunk_then_top_equals_the_whole_network(cfg):
    torch.manual_seed(0)
    encoder = Encoder(cfg, cfg.input_size).eval()
    x = torch.randn(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        whole = encoder(x)
        split = encoder.forward_from_trunk(encoder.forward_trunk(x))
    torch.testing.assert_close(whole, split)


def test_only_the_last_blocks_train_and_the_trunk_stays_in_eval_mode():
    backbone = Backbone(_lite0(trainable_blocks=2))
    trainable = {n.split(".")[1:4] and ".".join(n.split(".")[:3])
                 for n, p in backbone.model.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable == {"blocks.4.1", "blocks.4.2"}  # the last two blocks of stage 4
    backbone.train()
    assert not backbone.model.bn1.training and not backbone.model.blocks[4][0].training
    assert backbone.model.blocks[4][2].training


def test_trainable_blocks_errors_name_the_problem():
    with pytest.raises(ValueError, match="ResNet is neither"):
        Backbone(ModelConfig(backbone="test_resnet", feature_stage=3, trainable_blocks=1))
    every = Backbone(_lite0(trainable_blocks=99))  # more than the 11 blocks: all of them train
    assert not every.model.conv_stem.weight.requires_grad
    assert all(p.requires_grad for p in every.model.blocks.parameters())
    with pytest.raises(ConfigError, match=r"cache\.enabled=true needs a frozen trunk"):
        experiment_config("tiny", ["cache.enabled=true"])


def _cache_inputs(tiny_dataset, overrides=()):
    cfg = experiment_config("tiny", [*TINY_PRETRAINED, *overrides])
    dataset = Dataset.open(tiny_dataset)
    from geocells.geo.cover import region_cells

    model = build_model(cfg, region_cells(dataset.region, cfg.data.prototype_level))
    pool = TrainPool.build(dataset, model.prototypes, cfg)
    return cfg, dataset, model, pool


@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_cache_is_resumable_and_invalidated_by_what_it_depends_on(tiny_dataset, tmp_path, jitter):
    cfg, dataset, model, pool = _cache_inputs(tiny_dataset, [f"data.color_jitter={jitter}"])
    cpu = torch.device("cpu")
    cache = features.build(cfg, dataset, model, pool, tmp_path, cpu, progress=False)
    assert cache.ground.dtype == np.float16 and cache.ground.shape == (len(pool), 2, 112, 4, 4)
    assert cache.ground_ok.all() and cache.extra_ok.any()
    reference = np.array(cache.ground), np.array(cache.extra), np.array(cache.aerial)
    # the features are the frozen trunk's: recompute one view (a photo) through the encoder
    assert not pool.panorama[0]
    if jitter == 0.0:
        _check_first_view(reference[0], model, pool)
    # an interrupted build (half the ground part done, the rest garbage) resumes exactly
    meta_path = tmp_path / "features" / "meta.json"
    meta = json.loads(meta_path.read_text())
    half = len(pool) // 2 // 16 * 16  # builds stop at whole chunks (cache.batch_size=16)
    meta["done"] = {"ground": half, "aerial": 0, "extra": 0}
    meta["complete"] = False
    meta_path.write_text(json.dumps(meta))
    shape = tuple(meta["shapes"]["ground"])
    garbage = np.memmap(tmp_path / "features" / "ground.f16", np.float16, "r+", shape=shape)
    garbage[half:] = 7.0
    garbage.flush()
    resumed = features.build(cfg, dataset, model, pool, tmp_path, cpu, progress=False)
    np.testing.assert_array_equal(np.array(resumed.ground), reference[0])
    np.testing.assert_array_equal(np.array(resumed.extra), reference[1])
    # other draws (another seed) make another key: the cache is rebuilt, not reused
    cfg2, *_ = _cache_inputs(tiny_dataset, [f"data.color_jitter={jitter}", "train.seed=1"])
    assert features.cache_key(cfg2, dataset, pool) != meta["key"]
    rebuilt = features.build(cfg2, dataset, model, pool, tmp_path, cpu, progress=False)
    assert json.loads(meta_path.read_text())["key"] != meta["key"]
    assert not np.array_equal(np.array(rebuilt.aerial), reference[2])  # other shifts


def _check_first_view(ground: np.ndarray, model, pool) -> None:
    """The cached features are the frozen trunk's: recompute a view (a photo)."""
    pixels = model.ground.resize(load_image(pool.paths[0]))
    model.eval()
    with torch.no_grad():
        x = model.ground.normalize(torch.from_numpy(pixels[None].copy()))
        expected = model.ground.forward_trunk(x)[0].numpy()
    np.testing.assert_allclose(ground[0, 1], expected, rtol=2e-2, atol=2e-2)


def test_cache_size_is_bounded(tiny_dataset, tmp_path):
    cfg, dataset, model, pool = _cache_inputs(tiny_dataset, ["cache.max_gb=0.001"])
    with pytest.raises(ValueError, match=r"would take .* GB \(> cache.max_gb=0.001\)"):
        features.build(cfg, dataset, model, pool, tmp_path, torch.device("cpu"), progress=False)


def test_training_on_the_cache_updates_only_the_top(tiny_dataset, tmp_path):
    run = train_tiny(tiny_dataset, tmp_path / "run", TINY_PRETRAINED)
    meta = json.loads((run / "features" / "meta.json").read_text())
    assert meta["complete"]
    model = load_model(run)
    start = Backbone(_lite0(input_size=64))
    trained = model.ground.backbone.model.state_dict()
    initial = start.model.state_dict()
    torch.testing.assert_close(
        trained["blocks.2.0.conv_pw.weight"], initial["blocks.2.0.conv_pw.weight"]
    )
    torch.testing.assert_close(trained["bn1.running_mean"], initial["bn1.running_mean"])
    assert not torch.equal(
        trained["blocks.4.2.conv_pwl.weight"], initial["blocks.4.2.conv_pwl.weight"]
    )
    assert model.ground.std == pytest.approx((128 / 255,) * 3)


def test_validation_on_the_frozen_trunk_equals_the_whole_network(tiny_dataset):
    from geocells.train.validate import ValSet, _encode, validate

    _, dataset, model, _ = _cache_inputs(tiny_dataset)
    val = ValSet.build(dataset, model, 16, 200, seed=0)
    whole = validate(model, val, "cpu")
    val.freeze_trunk(model, "cpu", bf16=False)
    assert val.tile_trunk.dtype == torch.float16 and len(val.tile_trunk) == len(val.tiles)
    frozen = validate(model, val, "cpu")
    assert frozen["val_queries"] == whole["val_queries"] == 16
    model.eval()
    for encoder, pixels, trunk in ((model.ground, val.queries, val.query_trunk),
                                   (model.aerial, val.tiles, val.tile_trunk)):  # fmt: skip
        np.testing.assert_allclose(
            _encode(encoder, pixels, trunk), _encode(encoder, pixels, None), atol=3e-3, rtol=0
        )


@pytest.fixture(scope="module")
def panorama_dataset(tmp_path_factory):
    """A tiny world driven like Street View (small panoramas)."""
    from geocells.config import load_preset, resolve_config
    from geocells.synth import SynthConfig, run

    overrides = ["train_capture=panorama", "panorama_height=32", "n_train=0", "n_val=8",
                 "n_test=4", "min_query_distance_m=4", "capture_spacing_m=25"]  # fmt: skip
    cfg = resolve_config(SynthConfig, load_preset("tiny", "synth"), overrides)
    return run(cfg, tmp_path_factory.mktemp("pano") / "ds")


def test_cached_panorama_views_are_crops_at_spread_headings(panorama_dataset, tmp_path):
    from geocells.data.panorama import load_panorama, perspective_crop

    cfg, dataset, model, pool = _cache_inputs(panorama_dataset, ["cache.ground_views=3"])
    assert pool.panorama.all()
    cache = features.build(cfg, dataset, model, pool, tmp_path, torch.device("cpu"), False)
    draws = features._draw(cfg, pool, model.prototypes)
    spread = np.diff(np.sort(draws.crop_heading, axis=1), axis=1)
    np.testing.assert_allclose(spread, 120.0, atol=1e-6)  # three views, 120° apart
    index, view = 5, 2
    crop = perspective_crop(load_panorama(pool.paths[index]), draws.crop_heading[index, view],
                            draws.crop_fov[index, view], draws.crop_pitch[index, view], 64,
                            pool.heading[index])  # fmt: skip
    model.eval()
    with torch.no_grad():
        x = model.ground.normalize(torch.from_numpy(crop[None].copy()))
        expected = model.ground.forward_trunk(x)[0].numpy()
    np.testing.assert_allclose(cache.ground[index, view], expected, rtol=2e-2, atol=2e-2)
