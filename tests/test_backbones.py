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
                                                    ("vivit-s", 3, SMALL_3D), ("resnet18", 2, dict(stem="conv"))])
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


# ------------------------------------------------------------------------------------------------ the registry


def test_every_name_belongs_to_one_family_and_each_family_module_registers_one_entry():
    names = [name for family in FAMILIES for name in family.variants]
    assert len(names) == len(set(names)) == len(BACKBONES)
    assert {f.dims for f in FAMILIES} == {2, 3} and all(BACKBONES[n] is backbone_family(n) for n in names)


def test_an_unknown_backbone_is_one_line_listing_the_registered_ones():
    with pytest.raises(MedboostError) as e:
        build_backbone(BackboneConfig(name="resnet99"), 2)
    assert str(e.value) == f"backbone.name='resnet99' is not registered; choose one of {', '.join(BACKBONES)}"
    assert "resnet18" in str(e.value) and "\n" not in str(e.value)


def test_a_backbone_of_the_other_dimensionality_is_refused_with_the_ones_that_fit():
    message = r"^backbone 'resnet18' takes 2D input but the task is 3D; use one of vit3d"
    with pytest.raises(MedboostError, match=message):
        build_backbone(BackboneConfig(name="resnet18"), 3)


def _by_name_rule(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(decayed, not decayed) trainable parameter names by the rule the families' declarations reproduce: no decay on
    parameters under two dimensions and on names containing pos_embed, cls_token, reg_token or norm."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            skip = p.ndim < 2 or any(k in name for k in ("pos_embed", "cls_token", "reg_token", "norm"))
            (no_decay if skip else decay).append(name)
    return decay, no_decay


def _groups(model: torch.nn.Module, recipe) -> tuple[list[str], list[str]]:
    from medboost_cli.engine import make_optimizer

    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = make_optimizer(model, recipe).param_groups
    assert decay["weight_decay"] == recipe.train.weight_decay and no_decay["weight_decay"] == 0.0
    return [names[id(p)] for p in decay["params"]], [names[id(p)] for p in no_decay["params"]]


SMALL = {"vit-mini": SMALL_2D, "resnet18": dict(stem="conv"), "vit3d": SMALL_3D, "vivit-s": SMALL_3D}


@pytest.mark.parametrize("name, sets", [
    ("vit-mini", ()), ("vit-mini", ("backbone.stem=patch",)), ("resnet18", ()), ("vit3d", ()),
    ("vivit-s", ("backbone.temporal_depth=1",)), ("vivit-s", ("backbone.vivit_pos=factorised",)),
    ("vit-mini", ("model=pneumollm", "backbone.depth=2", "pneumollm.source_every=1")),
    ("vit-mini", ("booster.freeze=false",)),
])
def test_weight_decay_groups_are_the_parameter_name_rule(name, sets):
    """Each family's ``no_weight_decay()`` puts every trainable parameter of the existing configurations in the
    group the name rule puts it in, in the same order (the optimizer's state, and so the results, are the same)."""
    from medboost_cli.models import build_model

    task = "breast" if BACKBONES[name].dims == 2 else "adrenal3d"
    size = [f"backbone.{k}={v}" for k, v in SMALL[name].items() if k != "name"]
    recipe = load_recipe(task, preset="cpu", sets=["data.verify=false", f"backbone.name={name}"] + (
        ["backbone.stem=conv"] if name == "resnet18" else size) + list(sets))
    model = build_model(recipe, recipe.task_info).model
    decay, no_decay = _groups(model, recipe)
    if name == "resnet18":  # the new family: every conv and linear weight decays, no 1-D parameter does
        params = dict(model.named_parameters())
        assert all(params[n].ndim >= 2 for n in decay) and all(params[n].ndim < 2 for n in no_decay)
        return
    assert (decay, no_decay) == _by_name_rule(model)
    assert any("pos_embed" in n for n in no_decay) or "backbone.vivit_pos=factorised" in sets
    assert type(model).__name__ == ("PneumoLLM" if "model=pneumollm" in sets else "Classifier")
