"""``LMFamily``: everything medboost needs to know about one family of language-model layers, as one typed entry.

A family module (``llama.py``, ``bert.py``, ``phi.py``) builds one entry; ``lm/__init__.py`` registers it. Code
outside the family modules asks the entry (``lm.lm_family(spec.arch)``), never compares family names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .spec import LayerSpec

# booster.lm_norm / pneumollm.final_norm: the norm put after the LM's last layer used. unit: the family's final
# norm at its initial weights; pretrained: the LM's own final norm weights; none: the bare layer.
NORM_CHOICES = ("unit", "pretrained", "none")


def normal_init_(block: nn.Module, spec: LayerSpec, generator: torch.Generator) -> None:
    """The LM's own initialisation for a fresh layer: normal(0, initializer_range) weights, zero biases,
    unit norm scales (what transformers' ``_init_weights`` does for LLaMA, BERT and Phi)."""
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) * spec.init_std)


def rename(key: str, table: Mapping[str, str]) -> str:
    """Map a checkpoint key (layer prefix removed) onto a block's parameter names by ``table``'s module renames."""
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return key


@dataclass(frozen=True)
class MetaFormat:
    """A family's Meta-style checkpoint: params.json + consolidated.NN.pth (model-parallel parts)."""

    spec: Callable[[dict, str], LayerSpec]  # params.json (a dict), its path -> the layer shape
    renames: Mapping[str, str]  # module name after "layers.N." -> the block's
    split_dims: Mapping[str, int]  # module name -> the dim its model-parallel parts are concatenated along
    rope_rows_: Callable[[nn.Module, LayerSpec], None]  # reorder a read block's q/k rows into rope_tables' order


@dataclass(frozen=True)
class LMFamily:
    """One family of LM layers: how to read, build, count and normalise them."""

    name: str
    model_types: tuple[str, ...]  # the config.json model_type values read as this family
    block: Callable[[LayerSpec], nn.Module]  # the layer module, parameters named as the renamed checkpoint keys
    hf_config: type  # the pydantic schema its config.json is checked with (``untrusted.HFConfig`` or a subclass)
    spec_from_hf: Callable[[Any, str], LayerSpec]  # (checked config, where) -> the layer shape
    n_params: Callable[[LayerSpec], int]  # parameters of one layer
    flops: Callable[[LayerSpec, int], int]  # forward FLOPs of one layer on N tokens (2 per multiply-add)
    lm_norms: tuple[str, ...] = ("none",)  # the norms after the layer it allows (a subset of NORM_CHOICES)
    booster_norm: str = "none"  # booster.lm_norm=auto
    pneumollm_norm: str = "none"  # pneumollm.final_norm=auto
    final_norm: Callable[[LayerSpec], nn.Module] | None = None  # the LM's final norm, at its initial weights
    final_norm_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # norm parameter -> checkpoint keys
    no_final_norm: str = ""  # why unit/pretrained do not apply, for a family without a final norm
    hf_renames: Mapping[str, str] = field(default_factory=dict)  # module name after "<stack>.N." -> the block's
    rotary: bool = False  # its blocks apply RoPE when a caller passes tables (PneumoLLM's pneumollm.rope)
    random_init_: Callable[[nn.Module, LayerSpec, torch.Generator], None] = normal_init_
    meta: MetaFormat | None = None  # its Meta-style checkpoint format, if it has one

    def __post_init__(self):
        allowed = set(NORM_CHOICES)
        if not set(self.lm_norms) <= allowed or {self.booster_norm, self.pneumollm_norm} - set(self.lm_norms):
            raise ValueError(f"LM family {self.name}: norms {self.lm_norms} / defaults must be among {NORM_CHOICES}")
        if set(self.lm_norms) - {"none"} and (self.final_norm is None or not self.final_norm_keys):
            raise ValueError(f"LM family {self.name}: unit/pretrained norms need final_norm and final_norm_keys")
