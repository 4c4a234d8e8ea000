"""The backbone protocol, the keys each backbone family reads (others are refused, never ignored), and the 2D ViT
built on timm's public API only."""

from __future__ import annotations

import pytest
import torch

from medboost_cli.errors import MedboostError
from medboost_cli.models.backbones import BACKBONES, FAMILIES, Backbone, backbone_family, build_backbone
from medboost_cli.recipes import BackboneConfig, load_recipe
from medboost_cli.studies import expand, load_study, study_names
from medboost_cli.tasks import SHORT_NAMES

SMALL_2D = dict(name="vit-mini", dim=32, depth=1, heads=2)
SMALL_3D = dict(dim=32, depth=1, heads=2, dim_head=16, patch_size=7)


def _keys_of(name: str) -> frozenset[str]:
    return backbone_family(name).keys


@pytest.mark.parametrize("name, dims, overrides", [("vit-mini", 2, SMALL_2D), ("vit3d", 3, SMALL_3D),
                                                    ("vivit-s", 3, SMALL_3D)])
def test_every_family_follows_the_protocol(name, dims, overrides):
    torch.manual_seed(0)
    m = build_backbone(BackboneConfig(**{**overrides, "name": name}), dims)
    assert isinstance(m, Backbone) and m.dims == dims
    x = torch.randn(2, 3, *(m.input_size,) * dims)
    with torch.no_grad():
        tokens = m.forward_tokens(x)
        assert tokens.shape == (2, m.n_tokens, m.num_features) and m.pool(tokens).shape == (2, m.num_features)
    assert len(m.mean) == len(m.std) == m.in_chans


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("vit-mini", "temporal_depth", 2), ("vit-mini", "dim_head", 16), ("vit-mini", "vivit_norms", "head"),
        ("vit-mini", "vivit_pos", "factorised"), ("vit3d", "temporal_depth", 2), ("vit3d", "vivit_pos", "joint"),
    ],
)
def test_keys_a_family_does_not_read_are_refused(name, key, value):
    cfg = BackboneConfig(**{**(SMALL_2D if name == "vit-mini" else SMALL_3D), "name": name, key: value})
    with pytest.raises(MedboostError, match=rf"^backbone\.{key}={value} does not apply to backbone '{name}' .*; unset it$"):
        BACKBONES[name].build_named(cfg)


def test_every_key_is_read_by_some_family():
    read = frozenset().union(*(f.keys for f in FAMILIES))
    assert read == set(BackboneConfig.model_fields)


@pytest.mark.parametrize("task, key, value, dims", [("adrenal3d", "rotate", 10, 2), ("breast", "dflip", 0.5, 3)])
def test_augmentations_of_the_other_dimensionality_are_refused(task, key, value, dims):
    with pytest.raises(MedboostError, match=rf"--set data\.{key}={value}: data\.{key}=\S+ applies to {dims}D tasks only"):
        load_recipe(task, sets=[f"data.{key}={value}"])


@pytest.mark.parametrize("preset", [None, "cpu"])
def test_every_recipe_and_study_validates_with_the_keys_its_backbone_reads(preset):
    for task in sorted(set(SHORT_NAMES)):
        r = load_recipe(task, preset=preset)
        r.backbone.check_keys(_keys_of(r.backbone.name), r.backbone.name)
    for study in study_names():
        for run in expand(load_study(study, preset), seeds=1, preset=preset):
            run.recipe.backbone.check_keys(_keys_of(run.backbone), run.backbone)


def test_vit_tokens_are_timms_own_up_to_the_final_norm():
    """The embedding written with timm's public attributes gives bit for bit what timm's forward_features does."""
    torch.manual_seed(0)
    m = build_backbone(BackboneConfig(name="vit-t", img_size=64, drop_path=0.1), 2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.vit.norm(m.forward_tokens(x)), m.vit.forward_features(x))
