"""What the 3D backbone families share (``vit3d.py``, ``vivit.py``): MedMNIST volumes (B, C, D, H, W) as
non-overlapping p^3 patches (tubelets) embedded by ``LayerNorm -> Linear -> LayerNorm``, learned CLS tokens and
position embeddings, pre-norm transformer blocks, as the released R-LLM code (lucidrains' ``vit_3d.py`` /
``vivit.py``) has them. No pretrained 3D weights exist: every model trains from scratch. Grad-CAM is drawn for 2D
runs only, so the 3D families declare no Grad-CAM target.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from timm.layers import DropPath

from ...errors import ConfigError

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig


@dataclass(frozen=True)
class Size3D:
    """A backbone's default sizes; every field can be overridden by the ``backbone.*`` key of the same name."""

    dim: int
    depth: int  # ViViT: the spatial transformer's depth
    heads: int
    temporal_depth: int = 0  # ViViT only
    dim_head: int = 64
    mlp_ratio: float = 1.0  # the released code has mlp_dim = dim
    patch_size: int = 4  # ViViT: the tubelet is patch_size frames x patch_size x patch_size
    img_size: int = 28


# The backbone.* keys every 3D family reads; others must stay at their defaults (BackboneConfig.check_keys).
KEYS_COMMON = frozenset({"name", "img_size", "in_chans", "patch_size", "dim", "depth", "heads", "dim_head",
                         "mlp_ratio", "drop_path", "dropout", "booster_site"})


# ------------------------------------------------------------------------------------------------ pieces


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.proj = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm(x)), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(x, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, dim), nn.Dropout(dropout))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float, drop_path: float):
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.ff = FeedForward(dim, mlp_dim, dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.ff(x))


class Transformer(nn.Sequential):
    """Pre-norm blocks, bidirectional attention, no final norm; drop-path rate rising linearly to ``drop_path``."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int,
                 dropout: float = 0.0, drop_path: float = 0.0):
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        super().__init__(*(Block(dim, heads, dim_head, mlp_dim, dropout, r) for r in rates))


class PatchEmbed3D(nn.Sequential):
    """(B, C, D, H, W) -> (B, f, h*w, dim): p^3 patches grouped by their depth slab (the released code's layout,
    flattened over (f h w) by the 3D ViT), each embedded by LayerNorm -> Linear -> LayerNorm."""

    def __init__(self, in_chans: int, patch: int, dim: int):
        patch_dim = in_chans * patch**3
        super().__init__(
            Rearrange("b c (f pf) (h p1) (w p2) -> b f (h w) (p1 p2 pf c)", pf=patch, p1=patch, p2=patch),
            nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim),
        )


def token_param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape))  # unit scale, as the released code (lucidrains) initialises them


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)



# ------------------------------------------------------------------------------------------------ shared


class Backbone3D(nn.Module):
    """What both models share: the protocol's attributes, the patch embedding and the pooling norm (``head_norm``:
    a LayerNorm before the head reads CLS, else none)."""

    dims = 3

    def __init__(self, s: Size3D, in_chans: int, site: str, dropout: float, head_norm: bool = True):
        super().__init__()
        self.num_features, self.input_size, self.in_chans, self.booster_site = s.dim, s.img_size, in_chans, site
        self.mean, self.std = (0.5,) * in_chans, (0.5,) * in_chans
        self.grid = s.img_size // s.patch_size  # patches per axis
        self.mlp_dim = int(s.dim * s.mlp_ratio)
        self.patch_embed = PatchEmbed3D(in_chans, s.patch_size, s.dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(s.dim) if head_norm else nn.Identity()  # the released ViT3D head's LayerNorm

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens)[:, 0]


def resolve_size(base: Size3D, cfg: BackboneConfig) -> Size3D:
    """A variant's sizes with the config's size keys applied, checked."""
    overrides = {f.name: getattr(cfg, f.name) for f in fields(Size3D) if getattr(cfg, f.name) is not None}
    s = replace(base, **overrides)
    for key in ("img_size", "patch_size", "dim", "heads", "dim_head"):
        if getattr(s, key) < 1:
            raise ConfigError(f"backbone.{key}={getattr(s, key)} must be a positive integer")
    for key in ("depth", "temporal_depth"):
        if getattr(s, key) < 0:
            raise ConfigError(f"backbone.{key}={getattr(s, key)} must be zero or more")
    if int(s.dim * s.mlp_ratio) < 1:
        raise ConfigError(f"backbone.mlp_ratio={s.mlp_ratio} gives an empty MLP for dim {s.dim}; use a larger ratio")
    if s.img_size % s.patch_size:
        raise ConfigError(
            f"backbone.patch_size={s.patch_size} does not divide the input size {s.img_size} (backbone.img_size); "
            f"choose a patch size that divides it"
        )
    return s


def check_3d(cfg: BackboneConfig, base: Size3D, keys: frozenset[str], what: str,
             sites: tuple[str, ...]) -> tuple[Size3D, str]:
    """The checks every 3D family makes, then (its sizes, its booster site): ``base`` is the variant's sizes,
    ``sites`` the family's booster sites, its default first (``tokens`` or unset means the default)."""
    name = cfg.name
    if cfg.pretrained:
        raise ConfigError(f"backbone.pretrained: no pretrained weights exist for the 3D backbone '{name}'; "
                            f"set backbone.pretrained=false to train it from scratch")
    if cfg.weights:
        raise ConfigError(f"backbone.weights: the 3D backbone '{name}' cannot load weights; unset backbone.weights")
    if cfg.stem != "patch":
        raise ConfigError(f"backbone.stem={cfg.stem} is 2D only; use backbone.stem=patch for '{name}'")
    if cfg.in_chans < 1:
        raise ConfigError(f"backbone.in_chans={cfg.in_chans} must be a positive integer")
    cfg.check_keys(keys, what)
    s = resolve_size(base, cfg)
    site = sites[0] if cfg.booster_site in (None, "tokens") else cfg.booster_site
    if site not in sites:
        choices = ", ".join(dict.fromkeys(("tokens",) + sites))
        raise ConfigError(
            f"backbone.booster_site={cfg.booster_site} is not a site of '{name}'; choose one of {choices} or unset it"
        )
    return s, site
