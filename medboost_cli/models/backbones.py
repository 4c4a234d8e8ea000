"""Backbones: image or volume -> token sequence (B, N, D), and tokens -> pooled features (B, D).

Every backbone, 2D (here) or 3D (``backbones3d.py``), follows the ``Backbone`` protocol below. Backbones are
registered by name in ``BACKBONES`` with the input dimensionality in ``BACKBONE_DIMS``; each family declares the
``backbone.*`` keys it reads, and a key it does not read is an error when set (``BackboneConfig.check_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import timm
import torch
import torch.nn as nn
from timm.layers import PatchEmbed

from ..errors import ConfigError
from ..hub import cached_file, ensure_reachable
from .backbones3d import BACKBONES_3D

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ..recipes import BackboneConfig


@runtime_checkable
class Backbone(Protocol):
    """What the ``Classifier``, the engine and the booster rely on."""

    num_features: int  # token width D
    input_size: int  # side of the (square or cubic) input the backbone takes
    in_chans: int
    n_tokens: int  # tokens the booster sees at its site
    mean: tuple[float, ...]  # input normalisation, per channel
    std: tuple[float, ...]
    dims: int  # 2 (images) or 3 (volumes)

    def forward_tokens(self, x: torch.Tensor, boost: nn.Module | None = None) -> torch.Tensor:
        """Input -> tokens (B, N, D), with ``boost`` (a tokens -> tokens module) applied at the backbone's booster
        site: for the 2D ViTs and ViT3D after the last block, on all tokens, CLS included, before the final norm
        (ViViT: see ``backbones3d.py``)."""
        ...

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> (B, D) features for the head: the final norm (if the backbone has one there), then CLS."""
        ...


@dataclass(frozen=True)
class TimmViTSpec:
    timm_name: str
    img_size: int
    dims: int = 2
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


TIMM_VITS: dict[str, TimmViTSpec] = {
    "vit-s": TimmViTSpec("vit_small_patch16_224", 224),  # the paper's ViT-S/16
    "vit-t": TimmViTSpec("vit_tiny_patch16_224", 224),
    "vit-b": TimmViTSpec("vit_base_patch16_224", 224),
    # PneumoLLM's vision encoder: OpenAI CLIP ViT-L/14 (timm's QuickGELU variant: OpenAI's own activation; the
    # weights are timm/vit_large_patch14_clip_224.openai's). CLIP's mean/std come with it.
    "clip-l14": TimmViTSpec("vit_large_patch14_clip_quickgelu_224.openai", 224),
    # CPU-sized: 28x28 input, 4x4 patches (49 tokens + CLS), ViT-Tiny width, 6 blocks.
    "vit-mini": TimmViTSpec("vit_tiny_patch16_224", 28, overrides=(("patch_size", 4), ("depth", 6))),
}


# The backbone.* keys a timm ViT reads; others must stay at their defaults.
VIT_KEYS = frozenset({"name", "pretrained", "weights", "img_size", "in_chans", "patch_size", "stem", "dim", "depth",
                      "heads", "mlp_ratio", "drop_path", "dropout", "booster_site"})


def build_timm_vit(spec: TimmViTSpec, cfg: BackboneConfig) -> TimmViT:
    cfg.check_keys(VIT_KEYS, "a 2D ViT")
    if cfg.booster_site not in (None, "tokens"):
        raise ConfigError(f"backbone.booster_site={cfg.booster_site} is for ViViT; a ViT has one site, 'tokens'")
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
    if cfg.pretrained:
        kwargs["pretrained_cfg_overlay"] = {"file": str(_pretrained_file(spec.timm_name, cfg))}
    try:
        vit = timm.create_model(spec.timm_name, pretrained=cfg.pretrained, **kwargs)
    except (RuntimeError, ValueError, OSError) as e:
        raise ConfigError(
            f"backbone {cfg.name}: cannot build {spec.timm_name} with {kwargs} ({str(e).splitlines()[0]}); "
            f"check backbone.weights and the size keys"
        ) from None
    return TimmViT(vit, img_size, cfg.in_chans)


def _pretrained_file(timm_name: str, cfg: BackboneConfig) -> Path:
    """The local weights file: backbone.weights, else the hub cache, else fetched from the hub."""
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"backbone.weights: file not found: {path}; point it at a local weights file")
        return path
    hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if (cached := cached_file(hub_id, filename)) is not None:
            return cached
    ensure_reachable(
        f"pretrained weights for {timm_name} (hub id {hub_id})",
        f"download https://huggingface.co/{hub_id}/resolve/main/model.safetensors and set backbone.weights=PATH, "
        f"or train from scratch with backbone.pretrained=false",
    )
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(hub_id, "model.safetensors"))


BACKBONES: dict[str, Callable[[BackboneConfig], nn.Module]] = {
    **{name: (lambda cfg, spec=spec: build_timm_vit(spec, cfg)) for name, spec in TIMM_VITS.items()},
    **BACKBONES_3D,
}
BACKBONE_DIMS: dict[str, int] = {**{name: spec.dims for name, spec in TIMM_VITS.items()}, **{n: 3 for n in BACKBONES_3D}}


def build_backbone(cfg: BackboneConfig, dims: int) -> Backbone:
    if cfg.name not in BACKBONES:
        raise ConfigError(f"backbone.name='{cfg.name}' is not registered; choose one of {', '.join(BACKBONES)}")
    if BACKBONE_DIMS[cfg.name] != dims:
        fits = [n for n, d in BACKBONE_DIMS.items() if d == dims]
        raise ConfigError(
            f"backbone '{cfg.name}' takes {BACKBONE_DIMS[cfg.name]}D input but the task is {dims}D; "
            f"use one of {', '.join(fits)}"
        )
    return BACKBONES[cfg.name](cfg)
