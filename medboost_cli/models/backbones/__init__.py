"""Backbones: image or volume -> token sequence (B, N, D), and tokens -> pooled features (B, D).

One registry, ``FAMILIES``: each backbone family is one module here with one ``BackboneFamily`` entry (see
``family.py``) that names its backbones, their input dimensionality, the ``backbone.*`` keys the family reads (a
key it does not read is an error when set: ``BackboneConfig.check_keys``), its builder and its Grad-CAM target.
Adding a family is a new module plus one line in ``FAMILIES``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

import torch.nn as nn

from ...errors import ConfigError
from . import resnet, vit, vit3d, vivit
from .family import Backbone, BackboneFamily, CamTarget
from .vit import TIMM_VITS, VIT_KEYS, ConvStemEmbed, TimmViT, TimmViTSpec, build_timm_vit

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig

FAMILIES: tuple[BackboneFamily, ...] = (vit.FAMILY, resnet.FAMILY, vit3d.FAMILY, vivit.FAMILY)

# Each registered backbone name -> its family.
BACKBONES: MappingProxyType[str, BackboneFamily] = MappingProxyType(
    {name: family for family in FAMILIES for name in family.variants})
# Each name's input dimensionality, read from its family.
BACKBONE_DIMS: MappingProxyType[str, int] = MappingProxyType({name: f.dims for name, f in BACKBONES.items()})

__all__ = ["BACKBONES", "BACKBONE_DIMS", "FAMILIES", "TIMM_VITS", "VIT_KEYS", "Backbone", "BackboneFamily",
           "CamTarget", "ConvStemEmbed", "TimmViT", "TimmViTSpec", "backbone_family", "build_backbone",
           "check_backbone",
           "build_timm_vit", "gradcam_target"]


def backbone_family(name: str) -> BackboneFamily:
    """The family of the backbone ``name``; an unregistered name is one ConfigError line listing the registered."""
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name='{name}' is not registered; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def check_backbone(cfg: BackboneConfig, dims: int) -> BackboneFamily:
    """The backbone ``cfg.name``'s family, after its checks of ``cfg`` for a ``dims``-D task; nothing is built."""
    family = backbone_family(cfg.name)
    if family.dims != dims:
        fits = [n for n, f in BACKBONES.items() if f.dims == dims]
        raise ConfigError(
            f"backbone '{cfg.name}' takes {family.dims}D input but the task is {dims}D; use one of {', '.join(fits)}"
        )
    family.check_named(cfg)
    return family


def build_backbone(cfg: BackboneConfig, dims: int) -> Backbone:
    return check_backbone(cfg, dims).build_named(cfg)


def gradcam_target(name: str, backbone: nn.Module) -> CamTarget:
    """Where Grad-CAM reads the backbone ``name``; a family without a target is one ConfigError line."""
    family = backbone_family(name)
    if family.gradcam is None:
        able = [n for n, f in BACKBONES.items() if f.gradcam is not None]
        raise ConfigError(f"Grad-CAM: backbone '{name}' ({family.what}) has no Grad-CAM target; "
                          f"maps are drawn for runs with one of {', '.join(able)}")
    return family.gradcam(backbone)
