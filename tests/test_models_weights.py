"""Pretrained weights from local files: official DINOv2 layout, timm files, and failures."""

import pickle

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from geocells.models import ModelConfig, build_model
from geocells.models.backbone import Backbone

TINY_VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _vit_cfg(name: str, path="", img_size=70) -> ModelConfig:
    return ModelConfig(
        backbone=name,
        backbone_kwargs={**TINY_VIT, "img_size": img_size},
        pretrained=str(path),
        input_size=img_size,
        aerial_input_size=img_size,
        clusters=4,
        cluster_dim=8,
        global_dim=8,
        hidden_dim=16,
        dim=16,
    )


def _official_dinov2(path, registers: bool) -> dict:
    """A tiny checkpoint in the layout of facebookresearch/dinov2's .pth files (518 px grid)."""
    name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=518, **TINY_VIT)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 32)
    if registers:  # official: register_tokens, and pos_embed has a class-token slot
        state["register_tokens"] = state.pop("reg_token")
        state["pos_embed"] = torch.cat([torch.zeros(1, 1, 32), state["pos_embed"]], dim=1)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("registers", [False, True])
def test_official_dinov2_checkpoint_loads(tmp_path, registers):
    path = tmp_path / "dinov2_tiny.pth"
    official = _official_dinov2(path, registers)
    name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    backbone = Backbone(_vit_cfg(name, path))
    loaded = backbone.model.state_dict()
    torch.testing.assert_close(
        loaded["patch_embed.proj.weight"], official["patch_embed.proj.weight"]
    )
    torch.testing.assert_close(
        loaded["blocks.0.attn.qkv.weight"], official["blocks.0.attn.qkv.weight"]
    )
    # 37x37 position grid resampled to the 5x5 grid of a 70 px input
    assert loaded["pos_embed"].shape[1] == 25 + (0 if registers else 1)
    global_token, tokens = backbone(torch.zeros(2, 3, 70, 70))
    assert global_token.shape == (2, 32) and tokens.shape == (2, 25, 32)


def test_timm_safetensors_with_classifier_head_loads(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    path = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = ModelConfig(
        backbone="test_resnet",
        pretrained=str(path),
        feature_stage=3,
        input_size=64,
        aerial_input_size=64,
        clusters=4,
        cluster_dim=8,
        global_dim=8,
        hidden_dim=16,
    )
    model = build_model(cfg, np.array([1, 2], dtype=np.uint64))
    for encoder in (model.ground, model.aerial):
        weight = encoder.backbone.model.state_dict()["conv1.0.weight"]
        torch.testing.assert_close(weight, source.state_dict()["conv1.0.weight"])


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Backbone(_vit_cfg("vit_small_patch14_dinov2", tmp_path / "absent.pth"))


def test_wrong_architecture_is_an_error(tmp_path):
    path = tmp_path / "dinov2_tiny.pth"
    _official_dinov2(path, registers=False)
    cfg = ModelConfig(backbone="test_resnet", pretrained=str(path))
    with pytest.raises(ValueError, match="unexpected keys"):
        Backbone(cfg)


def test_missing_keys_are_an_error(tmp_path):
    path = tmp_path / "dinov2_tiny.pth"
    state = _official_dinov2(path, registers=False)
    del state["blocks.0.mlp.fc1.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"lack 1 keys.*blocks\.0\.mlp\.fc1\.weight"):
        Backbone(_vit_cfg("vit_small_patch14_dinov2", path))


def test_wrong_shapes_are_an_error(tmp_path):
    path = tmp_path / "dinov2_tiny.pth"
    _official_dinov2(path, registers=False)
    cfg = _vit_cfg("vit_small_patch14_dinov2", path)
    cfg.backbone_kwargs = {**cfg.backbone_kwargs, "embed_dim": 64}
    with pytest.raises(ValueError, match=r"shape mismatch|do not fit"):
        Backbone(cfg)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"weight": np.ones(3)}, handle)  # not loadable with weights_only=True
    with pytest.raises(ValueError, match="cannot read pretrained weights"):
        Backbone(_vit_cfg("vit_small_patch14_dinov2", path))


def test_unknown_backbone_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown backbone .resnet18x.*resnet18"):
        Backbone(ModelConfig(backbone="resnet18x"))
