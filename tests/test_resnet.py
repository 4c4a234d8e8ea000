"""The ResNet family (medboost_cli/models/backbones/resnet.py): MedMNIST v2's 28x28 stem and timm's 224 one, layer4's
map as tokens with their mean first, pretrained weights through timm, the keys it refuses, and a short training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medboost_cli.errors import MedboostError
from medboost_cli.models import Classifier
from medboost_cli.models.backbones import Backbone, build_backbone
from medboost_cli.models.booster import Booster
from medboost_cli.recipes import BackboneConfig, load_recipe

from .conftest import write_medmnist


def resnet(seed: int = 0, **keys) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone(BackboneConfig(name="resnet18", **keys), 2).eval()


@pytest.mark.parametrize("stem, size, kernel, stride, pool, grid", [
    ("conv", 28, 3, 1, nn.Identity, 4),  # MedMNIST v2's ResNet-18 (28): 28 -> 28 -> 14 -> 7 -> 4
    ("patch", 224, 7, 2, nn.MaxPool2d, 7),  # timm's standard stem: 224 -> 112 -> 56 -> 56 -> 28 -> 14 -> 7
])
def test_the_two_stems_and_their_token_grids(stem, size, kernel, stride, pool, grid):
    m = resnet(stem=stem)
    assert isinstance(m, Backbone) and (m.dims, m.num_features, m.input_size, m.in_chans) == (2, 512, size, 3)
    assert m.resnet.conv1.kernel_size == (kernel, kernel) and m.resnet.conv1.stride == (stride, stride)
    assert isinstance(m.resnet.maxpool, pool)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        tokens = m.forward_tokens(x)
    assert m.n_tokens == grid * grid + 1 and tokens.shape == (2, m.n_tokens, 512)
    assert len(m.mean) == len(m.std) == 3
    assert abs(sum(p.numel() for p in m.parameters()) / 11.2e6 - 1) < 0.01  # ResNet-18 without its fc: 11.2M


@pytest.mark.parametrize("size", [32, 33, 64])
def test_n_tokens_follows_the_input_size(size):
    m = resnet(stem="conv", img_size=size)
    with torch.no_grad():
        assert m.forward_tokens(torch.randn(1, 3, size, size)).shape[1] == m.n_tokens == math.ceil(size / 8) ** 2 + 1


def test_tokens_are_layer4s_map_and_the_first_is_timms_average_pool():
    m = resnet(stem="conv")
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        tokens = m.forward_tokens(x)
        fmap = m.resnet.forward_features(x)
        pooled = m.resnet.forward_head(fmap, pre_logits=True)  # timm's global average pool
    torch.testing.assert_close(tokens[:, 1:], fmap.flatten(2).transpose(1, 2))
    torch.testing.assert_close(m.pool(tokens), pooled)


class Recorder(nn.Module):
    def forward(self, x):
        self.seen = x
        return x * 2


def test_the_booster_sees_all_tokens_and_the_head_reads_the_first():
    m = resnet(stem="conv")
    model = Classifier(m, Recorder(), 3).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        logits = model(x)
        assert model.booster.seen.shape == (2, 17, 512)
        torch.testing.assert_close(logits, model.head(2 * m.forward_tokens(x)[:, 0]))


def test_pretrained_weights_load_through_timm_from_a_local_file(tmp_path):
    """backbone.weights: timm's own loading (the head dropped); the 28x28 stem's new 3x3 conv starts afresh."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    source = timm.create_model("resnet18")
    save_file(source.state_dict(), tmp_path / "resnet18.safetensors")
    for stem in ("patch", "conv"):
        m = resnet(stem=stem, pretrained=True, weights=str(tmp_path / "resnet18.safetensors"))
        assert torch.equal(m.resnet.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
        assert torch.equal(m.resnet.conv1.weight, source.conv1.weight) == (stem == "patch")


def test_pretrained_weights_offline_are_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("medboost_cli.models.backbones.timm_weights.cached_file", lambda *a: None)
    with pytest.raises(MedboostError, match=r"^cannot fetch pretrained weights for resnet18 .*backbone\.weights=PATH"):
        resnet(pretrained=True)


@pytest.mark.parametrize("keys, message", [
    (dict(patch_size=4), r"^backbone\.patch_size=4 does not apply to backbone 'resnet18' \(a ResNet\); unset it$"),
    (dict(dim=64), r"^backbone\.dim=64 does not apply"),
    (dict(booster_site="spatial"), r"^backbone\.booster_site=spatial is for ViViT; a ResNet has one site"),
    (dict(img_size=-3), r"^backbone\.img_size=-3 must be a positive integer$"),
])
def test_keys_a_resnet_does_not_take_are_refused(keys, message):
    with pytest.raises(MedboostError, match=message):
        resnet(**keys)


@pytest.mark.parametrize("mode", ["none", "rllm"])
def test_a_short_training_on_the_cpu_preset(tmp_path, mode):
    """`train breast --backbone resnet18 --preset cpu`, with and without the booster (the packaged MiniLM's last
    layer), on a small learnable synthetic file: it completes with finite test metrics."""
    from medboost_cli.engine import train

    write_medmnist(tmp_path / "d", "breast")
    recipe = load_recipe("breast", preset="cpu", flags=[("--backbone", "backbone.name", "resnet18"),
                                                        ("--booster", "booster.mode", mode)],
                         sets=["data.verify=false", "train.epochs=2", "train.batch_size=16", "train.warmup_epochs=0"])
    assert recipe.backbone.stem == "conv"  # the CPU preset's stem: MedMNIST's 28x28 form
    row = train(recipe, tmp_path / "d", tmp_path / "r", log=lambda *a: None)
    assert row["status"] == "completed" and row["backbone"] == "resnet18" and row["booster"] == mode
    assert 0.0 <= row["test_auc"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0
    assert row["run_id"].startswith("breast-resnet18-")
