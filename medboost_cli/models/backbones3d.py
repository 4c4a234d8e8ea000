"""3D backbones for MedMNIST volumes (B, C, D, H, W): a plain 3D ViT and a factorised-encoder ViViT.

Both follow the released R-LLM code (lucidrains' ``vit_3d.py`` / ``vivit.py``): non-overlapping p^3 patches
(tubelets) embedded by ``LayerNorm -> Linear -> LayerNorm``, learned CLS tokens and position embeddings and
pre-norm transformer blocks. They expose the ``Backbone`` protocol of ``backbones.py``; the project's
``Classifier`` adds the head's ``Linear``. No pretrained 3D weights exist: every model trains from scratch.

Where the norms sit, as in the released code:

* ``vit3d``: no final norm inside the transformer; the head's ``LayerNorm`` is the backbone's ``pool`` norm, after
  the booster;
* ``vivit-*`` (``backbone.vivit_norms=stacks``, the default): the spatial and the temporal transformer each end
  in a ``LayerNorm``, so the spatial CLS tokens are normalised before the temporal transformer and the booster
  receives normalised tokens; ``pool`` reads the CLS token as it is (the released head is a bare ``Linear``).
  ``vivit_norms=head`` is the other placement: no final norm in either stack, one ``LayerNorm`` in ``pool``.

Booster sites (``backbone.booster_site``; ``tokens`` or unset means the backbone's default):

* ``vit3d``: ``tokens``, after the transformer on all N+1 tokens (CLS included);
* ``vivit-*``: ``temporal`` (default), after the temporal transformer on the f+1 temporal tokens, as the released
  code does; or ``spatial``, right after the spatial transformer on each tubelet group's n+1 spatial tokens
  (batch B*f), and then not again after the temporal transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from timm.layers import DropPath

from ..errors import ConfigError

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ..recipes import BackboneConfig


@dataclass(frozen=True)
class Size3D:
    """A backbone's default sizes; every field can be overridden by the ``backbone.*`` key of the same name."""

    kind: str  # "vit3d" or "vivit"
    dim: int
    depth: int  # ViViT: the spatial transformer's depth
    heads: int
    temporal_depth: int = 0  # ViViT only
    dim_head: int = 64
    mlp_ratio: float = 1.0  # the released code has mlp_dim = dim
    patch_size: int = 4  # ViViT: the tubelet is patch_size frames x patch_size x patch_size
    img_size: int = 28


SIZES_3D: dict[str, Size3D] = {
    "vit3d": Size3D("vit3d", dim=1024, depth=8, heads=8),
    "vivit-s": Size3D("vivit", dim=512, depth=4, heads=8, temporal_depth=4),
    "vivit-m": Size3D("vivit", dim=1024, depth=8, heads=8, temporal_depth=8),
}
SITES: dict[str, tuple[str, ...]] = {"vit3d": ("tokens",), "vivit": ("temporal", "spatial")}  # default first
# The backbone.* keys each kind reads; others must stay at their defaults (BackboneConfig.check_keys).
_KEYS_COMMON = frozenset({"name", "img_size", "in_chans", "patch_size", "dim", "depth", "heads", "dim_head",
                          "mlp_ratio", "drop_path", "dropout", "booster_site"})
KEYS_3D: dict[str, frozenset[str]] = {
    "vit3d": _KEYS_COMMON,
    "vivit": _KEYS_COMMON | {"temporal_depth", "vivit_norms", "vivit_pos"},
}


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


def _token(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape))  # unit scale, as the released code (lucidrains) initialises them


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------ models


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


class ViT3D(Backbone3D):
    """3D ViT: N = (img/p)^3 patch tokens plus CLS, a learned (1, N+1, dim) position embedding, ``depth`` blocks.
    The booster sees all ``n_tokens = N + 1`` tokens after the last block."""

    def __init__(self, s: Size3D, in_chans: int = 3, site: str = "tokens", dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__(s, in_chans, site, dropout)
        self.n_tokens = self.grid**3 + 1
        self.cls_token = _token(1, 1, s.dim)
        self.pos_embed = _token(1, self.n_tokens, s.dim)
        self.transformer = Transformer(s.dim, s.depth, s.heads, s.dim_head, self.mlp_dim, dropout, drop_path)
        self.apply(_init_weights)

    def forward_tokens(self, x: torch.Tensor, boost: nn.Module | None = None) -> torch.Tensor:
        x = self.patch_embed(x).flatten(1, 2)  # (b, f*h*w, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.transformer(self.drop(x))
        return boost(x) if boost is not None else x


class ViViT(Backbone3D):
    """Factorised-encoder ViViT: f = D/p groups of n = (H/p)(W/p) tubelets of p frames x p x p.

    Positions (``pos``): ``joint`` (the released code's) adds one learned (1, f, n, dim) table to the tubelets, an
    entry per tubelet, so the model knows each group's place in depth; the spatial CLS token then joins each
    group without a position. ``factorised`` adds a spatial (1, 1, n+1, dim) table (CLS included) and a temporal
    (1, f, 1, dim) one. Each group (its spatial CLS first) goes through the spatial transformer; the groups' CLS
    outputs plus a temporal CLS token go through the temporal transformer: (b, f+1, dim).

    Norms (``norms``): ``stacks`` ends both transformers in a LayerNorm and pools CLS as it is (released);
    ``head`` has no final norm in either and a LayerNorm in ``pool``.

    ``n_tokens`` is what the booster sees at its site: f+1 temporal tokens (site ``temporal``), or n+1 spatial
    tokens per group, in a batch of b*f sequences (site ``spatial``).
    """

    def __init__(self, s: Size3D, in_chans: int = 3, site: str = "temporal", dropout: float = 0.0,
                 drop_path: float = 0.0, norms: str = "stacks", pos: str = "joint"):
        super().__init__(s, in_chans, site, dropout, head_norm=norms == "head")
        f, n = self.grid, self.grid**2
        self.norms, self.pos = norms, pos
        self.n_tokens = f + 1 if site == "temporal" else n + 1
        self.spatial_cls = _token(1, 1, 1, s.dim)
        if pos == "joint":
            self.pos_embed = _token(1, f, n, s.dim)
        else:
            self.spatial_pos = _token(1, 1, n + 1, s.dim)
            self.temporal_pos = _token(1, f, 1, s.dim)
        self.temporal_cls = _token(1, 1, s.dim)
        self.spatial = Transformer(s.dim, s.depth, s.heads, s.dim_head, self.mlp_dim, dropout, drop_path)
        self.temporal = Transformer(s.dim, s.temporal_depth, s.heads, s.dim_head, self.mlp_dim, dropout, drop_path)
        stack_norm = (lambda: nn.LayerNorm(s.dim)) if norms == "stacks" else nn.Identity
        self.spatial_norm, self.temporal_norm = stack_norm(), stack_norm()
        self.apply(_init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(b, C, D, H, W) -> (b, f, n+1, dim): the tubelets with their positions, each group's spatial CLS first."""
        x = self.patch_embed(x)  # (b, f, n, dim)
        b, f = x.shape[:2]
        cls = self.spatial_cls.expand(b, f, -1, -1)
        if self.pos == "joint":
            return torch.cat([cls, x + self.pos_embed], dim=2)
        return torch.cat([cls, x], dim=2) + self.spatial_pos + self.temporal_pos

    def forward_tokens(self, x: torch.Tensor, boost: nn.Module | None = None) -> torch.Tensor:
        x = self.embed(x)
        b, f = x.shape[:2]
        x = self.spatial_norm(self.spatial(self.drop(x).flatten(0, 1)))  # (b*f, n+1, dim)
        if boost is not None and self.booster_site == "spatial":
            x = boost(x)
        x = torch.cat([self.temporal_cls.expand(b, -1, -1), x[:, 0].unflatten(0, (b, f))], dim=1)
        x = self.temporal_norm(self.temporal(x))  # (b, f+1, dim)
        return boost(x) if boost is not None and self.booster_site == "temporal" else x


# ------------------------------------------------------------------------------------------------ building


def resolve_size(name: str, cfg: BackboneConfig) -> Size3D:
    """The registered sizes with the config's size keys applied, checked."""
    base = SIZES_3D[name]
    overrides = {f.name: getattr(cfg, f.name) for f in fields(Size3D)
                 if f.name != "kind" and getattr(cfg, f.name) is not None}
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


def build_backbone3d(name: str, cfg: BackboneConfig) -> nn.Module:
    if cfg.pretrained:
        raise ConfigError(f"backbone.pretrained: no pretrained weights exist for the 3D backbone '{name}'; "
                            f"set backbone.pretrained=false to train it from scratch")
    if cfg.weights:
        raise ConfigError(f"backbone.weights: the 3D backbone '{name}' cannot load weights; unset backbone.weights")
    if cfg.stem != "patch":
        raise ConfigError(f"backbone.stem={cfg.stem} is 2D only; use backbone.stem=patch for '{name}'")
    if cfg.in_chans < 1:
        raise ConfigError(f"backbone.in_chans={cfg.in_chans} must be a positive integer")
    kind = SIZES_3D[name].kind
    cfg.check_keys(KEYS_3D[kind], "a 3D ViT" if kind == "vit3d" else "a ViViT")
    s = resolve_size(name, cfg)
    sites = SITES[s.kind]
    site = sites[0] if cfg.booster_site in (None, "tokens") else cfg.booster_site
    if site not in sites:
        choices = ", ".join(dict.fromkeys(("tokens",) + sites))
        raise ConfigError(
            f"backbone.booster_site={cfg.booster_site} is not a site of '{name}'; choose one of {choices} or unset it"
        )
    if s.kind == "vit3d":
        return ViT3D(s, cfg.in_chans, site, cfg.dropout, cfg.drop_path)
    return ViViT(s, cfg.in_chans, site, cfg.dropout, cfg.drop_path, norms=cfg.vivit_norms or "stacks",
                 pos=cfg.vivit_pos or "joint")


BACKBONES_3D: dict[str, Callable[[BackboneConfig], nn.Module]] = {
    name: partial(build_backbone3d, name) for name in SIZES_3D
}
