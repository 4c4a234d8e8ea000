"""The 2D ViT family: timm VisionTransformers (ViT-S/T/B, CLIP ViT-L/14, the CPU-sized ViT-mini).

The booster's site is after the last block, on all tokens, CLS included, before the final norm (the released
R-LLM code's); ``pool`` applies the final norm and reads CLS. AdamW does not decay the position table and the
CLS token (nor any 1-D parameter). Grad-CAM reads the last block's first norm (pytorch-grad-cam's guidance for
ViTs): its patch tokens feed the attention that CLS reads, so their gradient is not zero, as it is at the
final norm, where only CLS reaches the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from timm.layers import PatchEmbed

from ...errors import ConfigError
from .family import BackboneFamily, CamTarget
from .timm_weights import check_weights, create_timm_model

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig


@dataclass(frozen=True)
class TimmViTSpec:
    timm_name: str
    img_size: int
    dim: int  # timm's embed_dim, num_heads and patch_size for this variant (what backbone.dim, .heads, .patch_size
    heads: int  # replace), for the checks made before timm builds it
    patch: int
    overrides: tuple[tuple[str, object], ...] = ()  # fixed timm kwargs that make this variant


class ConvStemEmbed(PatchEmbed):
    """Patch embedding by a stack of stride-2 3x3 convolutions instead of one patch-sized convolution
    ("Early convolutions help transformers see better", Xiao et al. 2021): the same token grid, with the
    local inductive bias that a ViT trained from scratch on a few hundred images lacks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        patch = self.patch_size[0]
        steps = patch.bit_length() - 1
        if patch != 2**steps or steps < 1 or self.patch_size[0] != self.patch_size[1]:
            raise ConfigError(f"backbone.stem=conv needs a square power-of-two patch size, not {self.patch_size}")
        in_chans, dim = self.proj.in_channels, self.proj.out_channels
        layers: list[nn.Module] = []
        for i in range(steps):
            out = max(dim >> (steps - i), 16)
            layers += [nn.Conv2d(in_chans, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            in_chans = out
        self.proj = nn.Sequential(*layers, nn.Conv2d(in_chans, dim, 1))


class TimmViT(nn.Module):
    """A timm VisionTransformer split at the booster's insertion point (after the last block, before the norm)."""

    dims = 2

    def __init__(self, vit: nn.Module, input_size: int, in_chans: int):
        super().__init__()
        plain = (vit.cls_token is not None and vit.reg_token is None and vit.pos_embed is not None
                 and not vit.no_embed_class and not vit.dynamic_img_size)
        if not plain:
            raise ConfigError("medboost's ViTs need timm's plain layout: a CLS token, a learned position table "
                                "that covers it, no register tokens, a fixed image size")
        self.vit = vit
        self.num_features = vit.num_features
        self.input_size = input_size
        self.n_tokens = vit.patch_embed.num_patches + vit.num_prefix_tokens
        cfg = vit.pretrained_cfg or {}
        self.mean = tuple(cfg.get("mean", (0.5, 0.5, 0.5)))
        self.std = tuple(cfg.get("std", (0.5, 0.5, 0.5)))
        self.in_chans = in_chans

    @property
    def blocks(self) -> nn.Sequential:
        """The transformer blocks, in order (PneumoLLM reads the residual stream between them)."""
        return self.vit.blocks

    @property
    def final_norm(self) -> nn.Module:
        """The norm after the last block (``pool`` applies it)."""
        return self.vit.norm

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patches, CLS first, plus positions: what timm's ``forward_features`` computes before its blocks, written
        with the model's public attributes (its private ``_pos_embed`` does the same for this layout)."""
        v = self.vit
        x = v.patch_embed(x)
        x = torch.cat([v.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + v.pos_embed
        return v.norm_pre(v.patch_drop(v.pos_drop(x)))

    def forward_tokens(self, x: torch.Tensor, boost: nn.Module | None = None) -> torch.Tensor:
        x = self.vit.blocks(self.embed(x))
        return boost(x) if boost is not None else x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.norm(tokens), pre_logits=True)

    def no_weight_decay(self) -> set[str]:
        return {"vit.pos_embed", "vit.cls_token"}


def gradcam_target(backbone: TimmViT) -> CamTarget:
    """The last block's first norm; its patch tokens (prefix tokens dropped) reshaped to the patch grid."""
    prefix = backbone.vit.num_prefix_tokens
    h, w = backbone.vit.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, prefix:].reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)

    return CamTarget(backbone.blocks[-1].norm1, reshape)


TIMM_VITS: dict[str, TimmViTSpec] = {
    "vit-s": TimmViTSpec("vit_small_patch16_224", 224, 384, 6, 16),  # the paper's ViT-S/16
    "vit-t": TimmViTSpec("vit_tiny_patch16_224", 224, 192, 3, 16),
    "vit-b": TimmViTSpec("vit_base_patch16_224", 224, 768, 12, 16),
    # PneumoLLM's vision encoder: OpenAI CLIP ViT-L/14 (timm's QuickGELU variant: OpenAI's own activation; the
    # weights are timm/vit_large_patch14_clip_224.openai's). CLIP's mean/std come with it.
    "clip-l14": TimmViTSpec("vit_large_patch14_clip_quickgelu_224.openai", 224, 1024, 16, 14),
    # CPU-sized: 28x28 input, 4x4 patches (49 tokens + CLS), ViT-Tiny width, 6 blocks.
    "vit-mini": TimmViTSpec("vit_tiny_patch16_224", 28, 192, 3, 4, overrides=(("patch_size", 4), ("depth", 6))),
}


# The backbone.* keys a timm ViT reads; others must stay at their defaults.
VIT_KEYS = frozenset({"name", "pretrained", "weights", "img_size", "in_chans", "patch_size", "stem", "dim", "depth",
                      "heads", "mlp_ratio", "drop_path", "dropout", "booster_site"})


MAX_IMG_SIZE = 4096  # a side; the position table grows with its square


def check_vit(spec: TimmViTSpec, cfg: BackboneConfig) -> None:
    """What a timm ViT needs of the backbone.* keys, checked before timm builds one (which would assert, divide by
    zero or allocate without end): the schema's positive sizes, plus heads dividing the width and a patch no
    larger than the input."""
    cfg.check_keys(VIT_KEYS, "a 2D ViT")
    if cfg.booster_site not in (None, "tokens"):
        raise ConfigError(f"backbone.booster_site={cfg.booster_site} is for ViViT; a ViT has one site, 'tokens'")
    dim, heads = cfg.dim or spec.dim, cfg.heads or spec.heads
    if dim % heads:
        raise ConfigError(f"backbone.dim={dim} is not divisible by backbone.heads={heads} ('{cfg.name}' splits its "
                          f"width evenly among its heads); choose a dim that is a multiple of heads")
    img_size = cfg.img_size or spec.img_size
    if not 1 <= img_size <= MAX_IMG_SIZE:
        raise ConfigError(f"backbone.img_size={img_size}: choose an input side from 1 to {MAX_IMG_SIZE}")
    patch = cfg.patch_size or spec.patch
    if patch > img_size:
        raise ConfigError(f"backbone.patch_size={patch} is larger than the input ({img_size}x{img_size}): no "
                          f"patch fits; choose a patch size up to {img_size}")
    check_weights(cfg)  # the weights file, before any data is read


def build_timm_vit(spec: TimmViTSpec, cfg: BackboneConfig) -> TimmViT:
    check_vit(spec, cfg)
    kwargs: dict = dict(spec.overrides)
    kwargs.update(
        {k: v for k, v in {
            "patch_size": cfg.patch_size, "embed_dim": cfg.dim, "depth": cfg.depth, "num_heads": cfg.heads,
            "mlp_ratio": cfg.mlp_ratio,
        }.items() if v is not None}
    )
    img_size = cfg.img_size or spec.img_size
    kwargs.update(img_size=img_size, in_chans=cfg.in_chans, num_classes=0, drop_path_rate=cfg.drop_path,
                  proj_drop_rate=cfg.dropout)
    if cfg.stem == "conv":
        kwargs["embed_layer"] = ConvStemEmbed
    return TimmViT(create_timm_model(spec.timm_name, cfg, **kwargs), img_size, cfg.in_chans)


FAMILY = BackboneFamily(what="a 2D ViT", dims=2, variants=TIMM_VITS, keys=VIT_KEYS, build=build_timm_vit,
                        gradcam=gradcam_target, check=check_vit)
