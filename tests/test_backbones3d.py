"""The 3D backbones: shapes, parameter counts, the booster's site, norms, position information and config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from einops import rearrange

from medboost_cli.errors import MedboostError
from medboost_cli.models.backbones import BACKBONES
from medboost_cli.models.backbones.vit3d import SIZES as VIT3D_SIZES
from medboost_cli.models.backbones.vit3d import ViT3D
from medboost_cli.models.backbones.vivit import SIZES as VIVIT_SIZES
from medboost_cli.models.backbones.vivit import ViViT

SIZES_3D = {**VIT3D_SIZES, **VIVIT_SIZES}
BACKBONES_3D = {name: BACKBONES[name].build_named for name in SIZES_3D}
from medboost_cli.recipes import BackboneConfig

# What the released R-LLM code's models count (with their classification head); ours must be within 0.5%, the
# rounding of these figures.
RELEASED = {"vit3d": 34.2e6, "vivit-s": 12.9e6, "vivit-m": 67.8e6}
TOKENS_28 = {"vit3d": 7**3 + 1, "vivit-s": 7 + 1, "vivit-m": 7 + 1}
SMALL = dict(dim=32, depth=1, heads=2, dim_head=16)


def build(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    if name in VIVIT_SIZES and "depth" in overrides:
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


def expected_params(name: str, norms: str = "stacks", pos: str = "joint", size: int = 28, classes: int = 0) -> int:
    """The parameter count written out from the architecture: patch embedding, CLS tokens, position tables,
    blocks, norms and (``classes`` > 0) the head's Linear."""
    s = SIZES_3D[name]
    d, inner, mlp, g = s.dim, s.heads * s.dim_head, int(s.dim * s.mlp_ratio), size // s.patch_size
    patch_dim = 3 * s.patch_size**3
    layer_norm = 2 * d
    embed = 2 * patch_dim + (patch_dim * d + d) + layer_norm  # LayerNorm -> Linear -> LayerNorm
    block = layer_norm + 3 * inner * d + (inner * d + d) + layer_norm + (d * mlp + mlp) + (mlp * d + d)
    head = classes * d + classes
    if name in VIT3D_SIZES:  # CLS, a (1, N+1, dim) table, the blocks, the head's LayerNorm
        return embed + d + (g**3 + 1) * d + s.depth * block + layer_norm + head
    f, n = g, g * g
    table = f * n * d if pos == "joint" else (n + 1) * d + f * d
    final_norms = 2 * layer_norm if norms == "stacks" else layer_norm  # one per stack, or one in the head
    return embed + 2 * d + table + (s.depth + s.temporal_depth) * block + final_norms + head


@pytest.mark.parametrize("name", list(BACKBONES_3D))
def test_parameter_counts(default_models, name):
    count = sum(p.numel() for p in default_models[name].parameters())
    assert count == expected_params(name)
    assert abs((count + SIZES_3D[name].dim * 2 + 2) / RELEASED[name] - 1) < 0.005  # + a binary task's head


@pytest.mark.parametrize("name", ["vivit-s", "vivit-m"])
@pytest.mark.parametrize("norms, pos", [("head", "factorised"), ("stacks", "factorised"), ("head", "joint")])
def test_parameter_counts_of_the_other_vivit_layouts(name, norms, pos):
    torch.manual_seed(0)
    m = BACKBONES_3D[name](BackboneConfig(name=name, vivit_norms=norms, vivit_pos=pos))
    assert sum(p.numel() for p in m.parameters()) == expected_params(name, norms, pos)


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


@pytest.mark.parametrize("pos, table", [("joint", "pos_embed"), ("factorised", "temporal_pos")])
def test_vivit_positions_tell_the_groups_apart(pos, table):
    """Both position layouts give each tubelet group's place in depth (the released joint table has an entry per
    tubelet); zeroing the table that carries it makes the output blind to the groups' order."""
    m = build("vivit-s", vivit_pos=pos, **SMALL)
    x = volume()
    moved = torch.roll(x, shifts=4, dims=2)  # permute the tubelet groups along depth
    with torch.no_grad():
        with_positions = (m.pool(m.forward_tokens(x)) - m.pool(m.forward_tokens(moved))).abs().max()
        getattr(m, table).zero_()
        without = (m.pool(m.forward_tokens(x)) - m.pool(m.forward_tokens(moved))).abs().max()
    assert with_positions > 10 * without and without < 1e-5  # without them the group order is invisible


def test_vivit_joint_table_has_an_entry_per_tubelet_and_none_for_cls():
    m = build("vivit-s", **SMALL)
    assert m.pos_embed.shape == (1, 7, 49, 32) and not hasattr(m, "temporal_pos")
    x = volume(n=1)
    with torch.no_grad():
        tokens = m.embed(x)  # (1, f, n+1, dim)
        assert torch.equal(tokens[:, :, 1:], m.patch_embed(x) + m.pos_embed)
        assert torch.equal(tokens[:, :, 0], m.spatial_cls.expand(1, 7, 1, -1)[:, :, 0])  # CLS: no position


def _is_layer_normed(t: torch.Tensor) -> bool:
    """Each token has mean 0 and variance 1: the output of a LayerNorm at its initial weight 1 and bias 0."""
    return torch.allclose(t.mean(-1), torch.zeros(()), atol=1e-4) and torch.allclose(
        t.var(-1, unbiased=False), torch.ones(()), atol=1e-3)


@pytest.mark.parametrize("site", ["temporal", "spatial"])
def test_vivit_stacks_norms_feed_the_booster_and_temporal_stack_normalised_tokens(site):
    """Released placement: both transformers end in a LayerNorm; the booster and the temporal transformer see
    normalised tokens; pool reads CLS as it is (a bare Linear head follows)."""
    m, identity = build("vivit-s", booster_site=site, **SMALL), nn.Identity()
    seen = {}
    m.temporal.register_forward_pre_hook(lambda mod, args: seen.update(temporal_in=args[0]))
    identity.register_forward_hook(lambda mod, args, out: seen.update(boosted_in=args[0]))
    with torch.no_grad():
        tokens = m.forward_tokens(volume(), identity)
        assert seen["boosted_in"].shape == ((2, 8, 32) if site == "temporal" else (14, 50, 32))
        assert _is_layer_normed(seen["boosted_in"]) and _is_layer_normed(seen["temporal_in"][:, 1:])
        assert _is_layer_normed(tokens) and torch.equal(m.pool(tokens), tokens[:, 0])
    assert isinstance(m.norm, nn.Identity)


def test_vivit_head_norms_put_one_layer_norm_after_the_booster():
    m, identity = build("vivit-s", vivit_norms="head", **SMALL), nn.Identity()
    seen = {}
    m.temporal.register_forward_pre_hook(lambda mod, args: seen.update(temporal_in=args[0]))
    identity.register_forward_hook(lambda mod, args, out: seen.update(boosted_in=args[0]))
    with torch.no_grad():
        tokens = m.forward_tokens(volume(), identity)
        assert not _is_layer_normed(seen["boosted_in"]) and not _is_layer_normed(seen["temporal_in"][:, 1:])
        assert torch.allclose(m.pool(tokens), nn.functional.layer_norm(tokens, (32,))[:, 0], atol=1e-6)
    assert isinstance(m.spatial_norm, nn.Identity) and isinstance(m.temporal_norm, nn.Identity)


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
        ("vit3d", dict(vivit_norms="head"), "backbone.vivit_norms"),
        ("vit3d", dict(vivit_pos="joint"), "backbone.vivit_pos"),
    ],
)
def test_config_errors(name, overrides, key):
    with pytest.raises(MedboostError, match=key.replace(".", r"\.")):
        BACKBONES_3D[name](BackboneConfig(name=name, **overrides))
