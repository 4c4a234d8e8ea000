"""Each booster mode computes its stated formula; frozen weights get no gradient and stay out of the optimizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medboost_cli.engine import make_optimizer
from medboost_cli.models import build_model
from medboost_cli.models.llm_loading import weights_sha256
from medboost_cli.models.booster import Booster
from medboost_cli.recipes import load_recipe

from .conftest import TINY_SETS


class Doubler(nn.Module):
    """A stand-in F_L whose effect is easy to write down: F_L(r) = 2 r + 1."""

    def forward(self, r):
        return 2 * r + 1


def _booster(mode):
    torch.manual_seed(0)
    b = Booster(mode, dim=6, lm=Doubler(), lm_dim=10)
    return b, torch.randn(3, 5, 6)


@pytest.mark.parametrize(
    "mode, formula",
    [
        ("rllm", lambda E, L, D, x: D(L(E(x)) + E(x))),
        ("out", lambda E, L, D, x: x + D(L(E(x)))),
        ("hybrid", lambda E, L, D, x: x + D(L(E(x)) + E(x))),
        ("mlp", lambda E, L, D, x: D(E(x))),
    ],
)
def test_mode_computes_its_formula(mode, formula):
    b, x = _booster(mode)
    E = lambda t: t @ b.encode.weight.T  # noqa: E731  bias-free linear maps
    D = lambda t: t @ b.decode.weight.T  # noqa: E731
    assert torch.allclose(b(x), formula(E, Doubler(), D, x), atol=1e-5)


def test_none_is_the_identity_and_has_no_parameters():
    b = Booster("none", dim=6)
    x = torch.randn(2, 4, 6)
    assert torch.equal(b(x), x) and not list(b.parameters())


def test_adapters_are_bias_free_with_the_right_shapes():
    b, _ = _booster("rllm")
    assert b.encode.bias is None and b.decode.bias is None
    assert b.encode.weight.shape == (10, 6) and b.decode.weight.shape == (6, 10)


def test_mlp_mode_has_no_lm_layer():
    b, _ = _booster("mlp")
    assert b.lm is None


def test_modes_differ_from_each_other():
    outs = {}
    for mode in ("rllm", "out", "hybrid", "mlp"):
        b, x = _booster(mode)
        outs[mode] = b(x)
    modes = list(outs)
    for i, a in enumerate(modes):
        for c in modes[i + 1 :]:
            assert not torch.allclose(outs[a], outs[c]), (a, c)


def _recipe(mode, *sets):
    return load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", mode)], sets=TINY_SETS + list(sets))


def _tiny_model(mode, *sets):
    recipe = _recipe(mode, *sets)
    return build_model(recipe, recipe.task_info)


def test_frozen_layer_gets_no_gradient_and_is_not_optimised():
    built = _tiny_model("rllm")
    model = built.model
    lm_params = list(model.booster.lm.parameters())
    assert lm_params and all(not p.requires_grad for p in lm_params)
    out = model(torch.randn(4, 3, 28, 28)).sum()
    out.backward()
    assert all(p.grad is None for p in lm_params)
    assert model.booster.encode.weight.grad.abs().sum() > 0  # gradient flows through F_L to F_E
    optimised = {id(p) for g in make_optimizer(model, _recipe("rllm")).param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in lm_params}
    assert built.frozen_sha256 == weights_sha256(model.booster.lm)  # the hash checkpoints hold is the layer's


def test_freeze_false_trains_the_layer_in_fp32():
    built = _tiny_model("rllm", "booster.freeze=false")
    params = list(built.model.booster.lm.parameters())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
    assert built.frozen_sha256 is None


def test_paired_models_share_backbone_and_head_initialisation():
    """none and rllm with the same seed differ only by the booster."""
    a, b = _tiny_model("none").model, _tiny_model("rllm").model
    for (name, p), (_, q) in zip(a.backbone.named_parameters(), b.backbone.named_parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(a.head.weight, b.head.weight)
    c = load_recipe("breast", preset="cpu", sets=TINY_SETS, flags=[("--seed", "seed", 1)])
    assert not torch.equal(build_model(c, c.task_info).model.head.weight, a.head.weight)


def test_booster_wraps_all_tokens_before_the_final_norm():
    built = _tiny_model("rllm")
    model = built.model
    seen = {}
    model.booster.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        logits = model(x)
        tokens = model.backbone.forward_tokens(x)
        assert seen["inp"].shape == tokens.shape == (2, 50, 32)  # CLS + 49 patches, all boosted
        assert torch.allclose(seen["inp"], tokens)
        v = model.backbone.vit
        expected = model.head(v.norm(seen["out"])[:, 0])  # final norm, then the head reads CLS
    assert torch.allclose(logits, expected, atol=1e-5)
