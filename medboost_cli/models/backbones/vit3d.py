"""The 3D ViT family (``vit3d``, the released R-LLM code's ViT3D).

N = (img/p)^3 patch tokens plus CLS, no final norm inside the transformer; the head's ``LayerNorm`` is the
backbone's ``pool`` norm, after the booster. The booster's one site, ``tokens``, is after the last block, on all
N+1 tokens, CLS included. AdamW does not decay the CLS token and the position table (nor any 1-D parameter).
No Grad-CAM target (3D).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .blocks3d import KEYS_COMMON, Backbone3D, Size3D, Transformer, check_3d, init_weights, token_param
from .family import BackboneFamily

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig


class ViT3D(Backbone3D):
    """3D ViT: N = (img/p)^3 patch tokens plus CLS, a learned (1, N+1, dim) position embedding, ``depth`` blocks.
    The booster sees all ``n_tokens = N + 1`` tokens after the last block."""

    def __init__(self, s: Size3D, in_chans: int = 3, site: str = "tokens", dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__(s, in_chans, site, dropout)
        self.n_tokens = self.grid**3 + 1
        self.cls_token = token_param(1, 1, s.dim)
        self.pos_embed = token_param(1, self.n_tokens, s.dim)
        self.transformer = Transformer(s.dim, s.depth, s.heads, s.dim_head, self.mlp_dim, dropout, drop_path)
        self.apply(init_weights)

    def forward_tokens(self, x: torch.Tensor, boost: nn.Module | None = None) -> torch.Tensor:
        x = self.patch_embed(x).flatten(1, 2)  # (b, f*h*w, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.transformer(self.drop(x))
        return boost(x) if boost is not None else x


    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}


SIZES: dict[str, Size3D] = {"vit3d": Size3D(dim=1024, depth=8, heads=8)}
KEYS = KEYS_COMMON


def check_vit3d(base: Size3D, cfg: BackboneConfig) -> tuple[Size3D, str]:
    return check_3d(cfg, base, KEYS, "a 3D ViT", ("tokens",))


def build_vit3d(base: Size3D, cfg: BackboneConfig) -> ViT3D:
    s, site = check_vit3d(base, cfg)
    return ViT3D(s, cfg.in_chans, site, cfg.dropout, cfg.drop_path)


FAMILY = BackboneFamily(what="a 3D ViT", dims=3, variants=SIZES, keys=KEYS, build=build_vit3d, check=check_vit3d)
