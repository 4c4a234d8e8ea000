"""The 3D backbones: shapes, parameter counts, the booster's site, position information and config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from einops import rearrange

from medboost_cli.errors import MedboostError
from medboost_cli.models.backbones3d import BACKBONES_3D, SIZES_3D, ViT3D, ViViT
from medboost_cli.recipes import BackboneConfig

# Parameter counts of the default sizes (backbone only: the Classifier's Linear head is not included).
# vit3d   = patch embed 200,064 + CLS 1,024 + pos 344x1024 + 8 blocks x 4,201,472 + pool norm 2,048
# vivit-s = patch embed  99,840 + 2 CLS + spatial pos 50x512 + temporal pos 7x512 + 8 blocks x 1,576,448 + norm
# vivit-m = patch embed 200,064 + 2 CLS + spatial pos 50x1024 + temporal pos 7x1024 + 16 blocks x 4,201,472 + norm
PARAMS = {"vit3d": 34_167_168, "vivit-s": 12_743_040, "vivit-m": 67_486_080}
# What the released R-LLM code's models count (with their classification head); ours must stay within 2%.
# ViViT differs by ~1%: the released code has one (1, f, n+1, dim) position table where we have a spatial
# (1, 1, n+1, dim) and a temporal (1, f, 1, dim) one.
RELEASED = {"vit3d": 34.2e6, "vivit-s": 12.9e6, "vivit-m": 67.8e6}
TOKENS_28 = {"vit3d": 7**3 + 1, "vivit-s": 7 + 1, "vivit-m": 7 + 1}
SMALL = dict(dim=32, depth=1, heads=2, dim_head=16)


def build(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    if SIZES_3D[name].kind == "vivit" and "depth" in overrides:
        overrides.setdefault("temporal_depth", overrides["depth"])
    return BACKBONES_3D[name](BackboneConfig(name=name, **overrides)).eval()


def volume(n: int = 2, size: int = 28, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, size, generator=torch.Generator().manual_seed(seed))


class Recorder(nn.Module):
    """A stand-in booster: records the shapes it is given and replaces the tokens by ones."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x * 0 + 1


@pytest.fixture(scope="module")
def default_models():
    return {name: build(name) for name in BACKBONES_3D}


@pytest.mark.parametrize("name", list(BACKBONES_3D))
def test_default_sizes_at_28(default_models, name):
    m = default_models[name]
    dim = SIZES_3D[name].dim
    with torch.no_grad():
        tokens = m.forward_tokens(volume(n=1))
        pooled = m.pool(tokens)
    assert tokens.shape == (1, TOKENS_28[name], dim) and m.n_tokens == TOKENS_28[name]
    assert pooled.shape == (1, dim) and torch.isfinite(pooled).all()
    assert (m.dims, m.num_features, m.input_size, m.in_chans) == (3, dim, 28, 3)
    assert m.mean == (0.5,) * 3 and m.std == (0.5,) * 3


@pytest.mark.parametrize("name", list(BACKBONES_3D))
def test_parameter_counts(default_models, name):
    count = sum(p.numel() for p in default_models[name].parameters())
    assert count == PARAMS[name]
    assert abs(count / RELEASED[name] - 1) < 0.02


@pytest.mark.parametrize("name, n_tokens", [("vit3d", 16**3 + 1), ("vivit-s", 16 + 1), ("vivit-m", 16 + 1)])
def test_64_cubed_input(name, n_tokens):
    m = build(name, img_size=64, dim=64, depth=1, heads=2, dim_head=16)
    with torch.no_grad():
        tokens = m.forward_tokens(volume(size=64))
    assert tokens.shape == (2, n_tokens, 64) and m.n_tokens == n_tokens and m.input_size == 64
    assert m.pool(tokens).shape == (2, 64)


def test_patch_embedding_follows_the_released_layout():
    m = build("vit3d", **SMALL)
    x = volume(n=1)
    patches = rearrange(x, "b c (f pf) (h p1) (w p2) -> b (f h w) (p1 p2 pf c)", pf=4, p1=4, p2=4)
    _, norm1, linear, norm2 = m.patch_embed
    with torch.no_grad():
        assert torch.allclose(m.patch_embed(x).flatten(1, 2), norm2(linear(norm1(patches))))


def test_vit3d_boosts_all_tokens_after_the_transformer():
    m, rec = build("vit3d", **SMALL), Recorder()
    with torch.no_grad():
        plain = m.forward_tokens(volume())
        boosted = m.forward_tokens(volume(), rec)
    assert rec.shapes == [(2, 344, 32)] and m.booster_site == "tokens"
    assert torch.equal(boosted, torch.ones_like(plain)) and not torch.equal(plain, boosted)


@pytest.mark.parametrize("site", [None, "tokens", "temporal"])
def test_vivit_boosts_temporal_tokens_by_default(site):
    m, rec = build("vivit-s", booster_site=site, **SMALL), Recorder()
    with torch.no_grad():
        boosted = m.forward_tokens(volume(), rec)
    assert rec.shapes == [(2, 8, 32)] and m.booster_site == "temporal" and m.n_tokens == 8
    assert torch.equal(boosted, torch.ones_like(boosted))


def test_vivit_spatial_site_boosts_spatial_tokens_once():
    m, rec = build("vivit-s", booster_site="spatial", **SMALL), Recorder()
    with torch.no_grad():
        plain = m.forward_tokens(volume())
        boosted = m.forward_tokens(volume(), rec)
        other = m.forward_tokens(volume(seed=2), rec)
    assert rec.shapes == [(2 * 7, 50, 32)] * 2 and m.n_tokens == 50  # once per call, on (b f) groups of n+1 tokens
    assert boosted.shape == plain.shape == (2, 8, 32) and not torch.allclose(boosted, plain)
    assert not torch.allclose(boosted, torch.ones_like(boosted))  # the temporal transformer ran after the booster
    assert torch.allclose(boosted, other)  # everything after the site sees only the booster's output


def test_vit3d_output_depends_on_voxel_positions():
    m = build("vit3d", **SMALL)
    x = volume()
    moved = torch.roll(x, shifts=4, dims=2)  # move whole patches: the same patch contents at other positions
    with torch.no_grad():
        assert not torch.allclose(m.pool(m.forward_tokens(x)), m.pool(m.forward_tokens(moved)), atol=1e-4)
        m.pos_embed.zero_()  # control: without positions the CLS output is invariant to the patches' order
        assert torch.allclose(m.pool(m.forward_tokens(x)), m.pool(m.forward_tokens(moved)), atol=1e-4)


def test_vivit_temporal_positions_tell_the_groups_apart():
    m = build("vivit-s", **SMALL)
    x = volume()
    moved = torch.roll(x, shifts=4, dims=2)  # permute the tubelet groups along depth
    with torch.no_grad():
        with_positions = (m.pool(m.forward_tokens(x)) - m.pool(m.forward_tokens(moved))).abs().max()
        m.temporal_pos.zero_()
        without = (m.pool(m.forward_tokens(x)) - m.pool(m.forward_tokens(moved))).abs().max()
    assert with_positions > 10 * without and without < 1e-6  # without them the group order is invisible


def test_overrides_and_determinism():
    a = build("vivit-m", dim=48, depth=2, temporal_depth=1, heads=3, dim_head=8, mlp_ratio=2.0, patch_size=7,
              drop_path=0.1, dropout=0.1, in_chans=1)
    assert isinstance(a, ViViT) and (len(a.spatial), len(a.temporal), a.num_features) == (2, 1, 48)
    assert a.spatial[0].ff[1].out_features == 96 and a.n_tokens == 4 + 1 and a.mean == (0.5,)
    b = build("vivit-m", dim=48, depth=2, temporal_depth=1, heads=3, dim_head=8, mlp_ratio=2.0, patch_size=7,
              drop_path=0.1, dropout=0.1, in_chans=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    v = build("vit3d", **SMALL)
    assert isinstance(v, ViT3D) and (len(v.transformer), v.num_features, v.n_tokens) == (1, 32, 7**3 + 1)
    with torch.no_grad():
        assert a.forward_tokens(volume()[:, :1]).shape == (2, 5, 48)


@pytest.mark.parametrize(
    "name, overrides, key",
    [
        ("vit3d", dict(pretrained=True), "backbone.pretrained"),
        ("vivit-s", dict(pretrained=True), "backbone.pretrained"),
        ("vit3d", dict(patch_size=5), "backbone.patch_size"),
        ("vivit-m", dict(img_size=64, patch_size=6), "backbone.patch_size"),
        ("vit3d", dict(booster_site="spatial"), "backbone.booster_site"),
        ("vit3d", dict(booster_site="temporal"), "backbone.booster_site"),
        ("vit3d", dict(temporal_depth=2), "backbone.temporal_depth"),
        ("vit3d", dict(stem="conv"), "backbone.stem"),
    ],
)
def test_config_errors(name, overrides, key):
    with pytest.raises(MedboostError, match=key.replace(".", r"\.")):
        BACKBONES_3D[name](BackboneConfig(name=name, **overrides))
