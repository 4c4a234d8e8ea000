"""F_L: one transformer layer of a pretrained language model, position-free and bidirectional.

The layer families live in ``models/lm/`` (a registry of ``LMFamily`` entries, one module each: LLaMA, BERT,
Phi); this module holds what is the same for all of them, each family-specific step asked of the layer's entry.

Every family drops what ties its layer to text: no rotary/absolute position embedding and no causal mask. That is
what R-LLM calls them with. A caller that wants either passes it (PneumoLLM, ``pneumollm.py``): ``mask``, a
boolean (N, N) "may attend" matrix, and ``rope``, the (cos, sin) tables of ``rope_tables`` for families with
rotary.

``booster.lm_norm``, the norm after F_L's layer (``NormedLayer``): unit, the LM's final norm at its initial
weights (the released code's: its loader copies only layers.31.*, so LLaMA's final RMSNorm keeps weight 1);
pretrained, the model's own final norm weights; none, the bare layer; auto, the family's choice (LLaMA and Phi:
unit; BERT: none, it ends in LayerNorm).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError, ModelFileError
from .lm import FAMILIES, NORM_CHOICES, LayerSpec, layer_params, lm_family
from .lm.bert import BERT_RENAMES, BertBlock, BertMLP
from .lm.family import rename
from .lm.layers import LayerNorm, NormedLayer, RMSNorm, Rope, SelfAttention, apply_rope, rope_tables
from .lm.llama import LlamaBlock, LlamaMLP
from .lm.llama_meta import META_RENAMES, meta_rows_to_hf_
from .lm.phi import PhiBlock

__all__ = [
    "BERT_RENAMES", "BertBlock", "BertMLP", "IGNORED_SUFFIXES", "KNOWN_SPECS", "LM_NORMS", "LayerNorm", "LayerSpec",
    "LlamaBlock", "LlamaMLP", "META_RENAMES", "NormedLayer", "PhiBlock", "RMSNorm", "Rope", "SelfAttention",
    "apply_rope", "build_block", "layer_flops", "layer_params", "meta_rows_to_hf_", "normalise_layer_index", "random_init_",
    "rename_key", "resolve_lm_norm", "rope_tables", "shuffle_", "with_final_norm",
]

# Shapes known without a checkpoint (for `random:NAME` and benchmarks).
KNOWN_SPECS = {
    "llama-7b": LayerSpec("llama", 4096, 11008, 32, 32, 128, 1e-6, n_layers=32),
    "llama-13b": LayerSpec("llama", 5120, 13824, 40, 40, 128, 1e-6, n_layers=40),
    "minilm": LayerSpec("bert", 384, 1536, 12, 12, 32, 1e-12, n_layers=6, qkv_bias=True),
    "phi-2": LayerSpec("phi", 2560, 10240, 32, 32, 80, 1e-5, n_layers=32, qkv_bias=True),
}
# Buffers some checkpoints carry that a position-free layer does not use.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
LM_NORMS = ("auto", *NORM_CHOICES)


def build_block(spec: LayerSpec) -> nn.Module:
    return lm_family(spec.arch).block(spec)


def resolve_lm_norm(choice: str, spec: LayerSpec, key: str = "booster.lm_norm", auto: str | None = None) -> str:
    """``key`` (booster.lm_norm, or pneumollm.final_norm with its own ``auto``) for a layer of ``spec``: auto
    resolved to the family's choice; a norm the family does not take is an error."""
    if choice not in LM_NORMS:
        raise ConfigError(f"{key}={choice} is not one of {', '.join(LM_NORMS)}")
    family = lm_family(spec.arch)
    if choice == "auto":
        return auto or family.booster_norm
    if choice not in family.lm_norms:
        takers = ", ".join(f.name for f in FAMILIES.values() if choice in f.lm_norms)
        raise ConfigError(f"{key}={choice} is for LMs with a final norm ({takers}); {family.no_final_norm}: use "
                          f"{key}=auto or {' or '.join(family.lm_norms)}")
    return choice


def with_final_norm(layer: nn.Module, spec: LayerSpec, state: dict[str, torch.Tensor] | None = None) -> NormedLayer:
    """``layer`` followed by its family's final norm with the model's eps: the weights in ``state`` (norm
    parameter name -> tensor), or the norm's initial weights when None."""
    norm = lm_family(spec.arch).final_norm(spec)
    for name, tensor in (state or {}).items():
        param = getattr(norm, name)
        if tuple(tensor.shape) != tuple(param.shape):
            raise ModelFileError(f"the final norm {name} has shape {tuple(tensor.shape)}, not ({spec.hidden},)")
        setattr(norm, name, nn.Parameter(tensor, requires_grad=param.requires_grad))
    return NormedLayer(layer, norm)


def rename_key(key: str, arch: str, scheme: str) -> str:
    """Map a checkpoint key (layer prefix removed) onto ``build_block``'s parameter names; ``scheme`` is hf or
    meta (the family's Meta format)."""
    family = lm_family(arch)
    return rename(key, family.meta.renames if scheme == "meta" else family.hf_renames)


def random_init_(block: nn.Module, spec: LayerSpec, generator: torch.Generator) -> None:
    """The LM's own initialisation for a fresh layer (its family's)."""
    lm_family(spec.arch).random_init_(block, spec, generator)


def shuffle_(block: nn.Module, generator: torch.Generator) -> None:
    """Permute each tensor's entries: the same values, none of the learned structure."""
    with torch.no_grad():
        for p in block.parameters():
            flat = p.reshape(-1)
            p.copy_(flat[torch.randperm(flat.numel(), generator=generator)].view_as(p))


def layer_flops(spec: LayerSpec, tokens: int) -> int:
    """Forward FLOPs of one layer on ``tokens`` tokens (2 per multiply-add; attention scores and mixing)."""
    return lm_family(spec.arch).flops(spec, tokens)


def normalise_layer_index(layer: int, spec: LayerSpec, where: str) -> int:
    index = layer + spec.n_layers if layer < 0 else layer
    if not 0 <= index < spec.n_layers:
        raise ConfigError(
            f"booster.layer={layer} is out of range for {where}, which has {spec.n_layers} layers (0..{spec.n_layers - 1})"
        )
    return index
