"""The ViViT family (``vivit-s``, ``vivit-m``): the factorised-encoder ViViT of the released R-LLM code.

Norms (``backbone.vivit_norms``): ``stacks`` (the default, the released code's): the spatial and the temporal
transformer each end in a ``LayerNorm``, so the spatial CLS tokens are normalised before the temporal transformer
and the booster receives normalised tokens; ``pool`` reads the CLS token as it is (the released head is a bare
``Linear``). ``head`` is the other placement: no final norm in either stack, one ``LayerNorm`` in ``pool``.

Booster sites (``backbone.booster_site``; ``tokens`` or unset means ``temporal``): ``temporal``, after the temporal
transformer on the f+1 temporal tokens, as the released code does; or ``spatial``, right after the spatial
transformer on each tubelet group's n+1 spatial tokens (batch B*f), and then not again after the temporal
transformer.

AdamW does not decay the joint position table ``pos_embed`` (nor any 1-D parameter); the CLS tokens and the
factorised position tables are decayed. No Grad-CAM target (3D).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .blocks3d import KEYS_COMMON, Backbone3D, Size3D, Transformer, check_3d, init_weights, token_param
from .family import BackboneFamily

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig


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
        self.spatial_cls = token_param(1, 1, 1, s.dim)
        if pos == "joint":
            self.pos_embed = token_param(1, f, n, s.dim)
        else:
            self.spatial_pos = token_param(1, 1, n + 1, s.dim)
            self.temporal_pos = token_param(1, f, 1, s.dim)
        self.temporal_cls = token_param(1, 1, s.dim)
        self.spatial = Transformer(s.dim, s.depth, s.heads, s.dim_head, self.mlp_dim, dropout, drop_path)
        self.temporal = Transformer(s.dim, s.temporal_depth, s.heads, s.dim_head, self.mlp_dim, dropout, drop_path)
        stack_norm = (lambda: nn.LayerNorm(s.dim)) if norms == "stacks" else nn.Identity
        self.spatial_norm, self.temporal_norm = stack_norm(), stack_norm()
        self.apply(init_weights)

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


    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"} if self.pos == "joint" else set()


SIZES: dict[str, Size3D] = {
    "vivit-s": Size3D(dim=512, depth=4, heads=8, temporal_depth=4),
    "vivit-m": Size3D(dim=1024, depth=8, heads=8, temporal_depth=8),
}
KEYS = KEYS_COMMON | {"temporal_depth", "vivit_norms", "vivit_pos"}


def check_vivit(base: Size3D, cfg: BackboneConfig) -> tuple[Size3D, str]:
    return check_3d(cfg, base, KEYS, "a ViViT", ("temporal", "spatial"))


def build_vivit(base: Size3D, cfg: BackboneConfig) -> ViViT:
    s, site = check_vivit(base, cfg)
    return ViViT(s, cfg.in_chans, site, cfg.dropout, cfg.drop_path, norms=cfg.vivit_norms or "stacks",
                 pos=cfg.vivit_pos or "joint")


FAMILY = BackboneFamily(what="a ViViT", dims=3, variants=SIZES, keys=KEYS, build=build_vivit, check=check_vivit)
