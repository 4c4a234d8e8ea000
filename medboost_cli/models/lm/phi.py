"""The Phi family (microsoft/phi-1, phi-1.5, phi-2): attention and MLP in parallel from one LayerNorm with bias.

    out = x + attn(ln(x)) + mlp(ln(x)),   mlp = fc2(gelu_new(fc1(.))),   attn: q/k/v/dense with biases

Phi applies rotary positions to the first ``partial_rotary_factor`` of each head's dimensions; R-LLM runs its
layer without positions, so no rotary is applied (``rotary=False``: PneumoLLM's pneumollm.rope is refused), and
no causal mask. Parameter names are transformers' ``PhiDecoderLayer``'s, with ``self_attn.dense`` read as the
shared attention's ``self_attn.o_proj``.

Final norm: like LLaMA, Phi is pre-norm, so a layer's output is the un-normalised residual stream that the model
normalises with its final LayerNorm (``model.final_layernorm``, weight and bias) before anything reads it. The
booster's default (``booster.lm_norm=auto``) is therefore ``unit``: that LayerNorm at its initial weights (weight
1, bias 0), as the released R-LLM code's LLaMA recipe has it; ``pretrained`` reads the model's own weight and bias.
PneumoLLM's default is ``pretrained``, as for LLaMA.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from ...errors import ModelFileError
from ..untrusted import HF_HEAD_NAMES, HFConfig, Positive, check_heads, short
from .family import LMFamily
from .layers import LayerNorm, Rope, SelfAttention, layer_final_norm, linear
from .spec import LayerSpec, attention_params, block_flops


class PhiMLP(nn.Module):
    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden, spec.intermediate)
        self.fc2 = nn.Linear(spec.intermediate, spec.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, F.gelu(linear(self.fc1, x), approximate="tanh"))  # tanh form = gelu_new


class PhiBlock(nn.Module):
    """One Phi decoder layer: one LayerNorm feeds the attention and the MLP, both added to the input."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.input_layernorm = LayerNorm(spec.hidden, eps=spec.eps)
        self.self_attn = SelfAttention(spec, out_bias=True)
        self.mlp = PhiMLP(spec)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        if rope is not None:
            raise ValueError("medboost runs Phi layers without their partial rotary positions")
        x = x.float()
        h = self.input_layernorm(x)
        return x + self.self_attn(h, mask).float() + self.mlp(h).float()


class PhiConfig(HFConfig):
    """The keys of a Phi config.json that shape one layer (with Phi's own defaults)."""

    hidden_act: Annotated[str, Field(strict=True)] = "gelu_new"
    layer_norm_eps: Positive = 1e-5
    partial_rotary_factor: Annotated[float, Field(strict=True, gt=0, le=1)] | None = None  # not applied
    qk_layernorm: Annotated[bool, Field(strict=True)] = False


def spec_from_hf(c: PhiConfig, where: str) -> LayerSpec:
    if c.hidden_act != "gelu_new":
        raise ModelFileError(f"{where}: hidden_act {short(c.hidden_act)} is not supported (Phi uses gelu_new)")
    if c.qk_layernorm:
        raise ModelFileError(f"{where}: qk_layernorm=true is not supported (phi-1, phi-1.5 and phi-2 have none)")
    kv_heads = c.num_key_value_heads or c.num_attention_heads
    check_heads(c.hidden_size, c.num_attention_heads, kv_heads, where, HF_HEAD_NAMES)
    return LayerSpec(arch="phi", hidden=c.hidden_size, intermediate=c.intermediate_size,
                     heads=c.num_attention_heads, kv_heads=kv_heads,
                     head_dim=c.head_dim or c.hidden_size // c.num_attention_heads, eps=c.layer_norm_eps,
                     n_layers=c.num_hidden_layers, qkv_bias=True, init_std=c.initializer_range)


def n_params(spec: LayerSpec) -> int:
    """Projections and their biases, the two MLP matrices and their biases, one LayerNorm (weight and bias)."""
    qkv_bias = spec.head_dim * (spec.heads + 2 * spec.kv_heads)
    return attention_params(spec) + qkv_bias + 2 * spec.hidden * spec.intermediate + spec.intermediate \
        + 4 * spec.hidden  # dense and fc2 biases, LayerNorm weight and bias


def flops(spec: LayerSpec, tokens: int) -> int:
    return block_flops(spec, tokens, mlp_matrices=2)


PHI = LMFamily(
    name="phi",
    model_types=("phi",),
    block=PhiBlock,
    hf_config=PhiConfig,
    spec_from_hf=spec_from_hf,
    n_params=n_params,
    flops=flops,
    lm_norms=("unit", "pretrained", "none"),
    booster_norm="unit",
    pneumollm_norm="pretrained",
    final_norm=layer_final_norm,
    final_norm_keys={"weight": ("model.final_layernorm.weight", "final_layernorm.weight"),
                     "bias": ("model.final_layernorm.bias", "final_layernorm.bias")},
    hf_renames={"self_attn.dense": "self_attn.o_proj"},
)
