"""What every backbone is (the ``Backbone`` protocol) and what every backbone family declares (``BackboneFamily``).

A backbone family is one module under ``models/backbones/`` that defines its backbone class and one
``BackboneFamily`` entry; ``models/backbones/__init__.py`` registers the entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

import torch
import torch.nn as nn

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig


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
        site (each family's module says where)."""
        ...

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> (B, D) features for the head."""
        ...

    def no_weight_decay(self) -> set[str]:
        """Names (relative to the backbone) of parameters with two or more dimensions that AdamW does not decay,
        such as a learned position table. Parameters with fewer dimensions (biases, norm weights) are never
        decayed; the engine asks each part of the model (timm's convention, ``VisionTransformer.no_weight_decay``)."""
        ...


@dataclass(frozen=True)
class CamTarget:
    """Where Grad-CAM reads a backbone: ``layer``'s output, made a (B, C, H, W) map by ``reshape`` (None: the
    output is one already, as a convolution's)."""

    layer: nn.Module
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class BackboneFamily:
    """One backbone family: its registered names, what it takes, how it is built and what Grad-CAM reads.

    ``variants`` maps each registered backbone name to the family's own spec for it (a timm model name and
    sizes, say); ``build(spec, cfg)`` makes the backbone and refuses any ``backbone.*`` key outside ``keys``
    (``BackboneConfig.check_keys``). ``gradcam`` gives the layer Grad-CAM reads on a built backbone, or is None
    when the family has no meaningful one. Which parameters AdamW decays is the backbone's ``no_weight_decay()``
    (see ``Backbone``), defined by the family's backbone class. ``check(spec, cfg)`` makes the family's checks of
    the keys without building anything, so that a run stops on them before its data is read (``build`` makes them
    too).
    """

    what: str  # how messages name the family: "a 2D ViT"
    dims: int  # 2 (images) or 3 (volumes)
    variants: Mapping[str, Any]
    keys: frozenset[str]  # the backbone.* keys the family reads
    build: Callable[[Any, BackboneConfig], nn.Module]
    gradcam: Callable[[nn.Module], CamTarget] | None = None
    check: Callable[[Any, BackboneConfig], Any] | None = None

    def check_named(self, cfg: BackboneConfig) -> None:
        """The family's checks of ``cfg`` for the backbone ``cfg.name``; nothing is built."""
        if self.check is not None:
            self.check(self.variants[cfg.name], cfg)

    def build_named(self, cfg: BackboneConfig) -> nn.Module:
        """The backbone ``cfg.name`` (one of ``variants``)."""
        return self.build(self.variants[cfg.name], cfg)
