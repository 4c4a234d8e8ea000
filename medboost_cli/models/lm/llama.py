"""The LLaMA family (LLaMA, Mistral, Qwen2): pre-norm RMSNorm, grouped-query attention, SwiGLU MLP.

A LLaMA layer ends without a norm: in the LM its output goes on through the next layers and, after the last, the
model's final RMSNorm. The booster puts that norm after the layer (``booster.lm_norm``, auto: unit), as the
released R-LLM code does (its ``LLaMATransformer(first_layer=31)`` runs layer 31, then ``self.norm``, whose weight
keeps its initial 1). RoPE lives in the attention and is applied only when a caller passes tables (PneumoLLM).
Checkpoints: Hugging Face (names as transformers' ``LlamaDecoderLayer``) and Meta's (``llama_meta.py``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ModelFileError
from ..untrusted import HF_HEAD_NAMES, HFConfig, check_heads, short
from .family import LMFamily
from .layers import RMSNorm, Rope, SelfAttention, rms_final_norm
from .llama_meta import META_FORMAT
from .spec import LayerSpec, attention_params, block_flops


class LlamaMLP(nn.Module):
    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.gate_proj = nn.Linear(spec.hidden, spec.intermediate, bias=False)
        self.up_proj = nn.Linear(spec.hidden, spec.intermediate, bias=False)
        self.down_proj = nn.Linear(spec.intermediate, spec.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.gate_proj.weight.dtype)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """One LLaMA decoder layer (parameter names as in transformers' LlamaDecoderLayer); RoPE and a mask only when
    the caller passes them."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden, spec.eps)
        self.self_attn = SelfAttention(spec, out_bias=False)
        self.post_attention_layernorm = RMSNorm(spec.hidden, spec.eps)
        self.mlp = LlamaMLP(spec)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        x = x.float()
        x = x + self.self_attn(self.input_layernorm(x), mask, rope).float()
        return x + self.mlp(self.post_attention_layernorm(x)).float()


def spec_from_hf(c: HFConfig, where: str) -> LayerSpec:
    """A checked LLaMA/Mistral/Qwen2 config.json -> the layer shape (Qwen2's q/k/v carry biases by default)."""
    if c.hidden_act != "silu":
        raise ModelFileError(f"{where}: hidden_act {short(c.hidden_act)} is not supported (LLaMA uses silu)")
    kv_heads = c.num_key_value_heads or c.num_attention_heads
    check_heads(c.hidden_size, c.num_attention_heads, kv_heads, where, HF_HEAD_NAMES)
    return LayerSpec(arch="llama", hidden=c.hidden_size, intermediate=c.intermediate_size,
                     heads=c.num_attention_heads, kv_heads=kv_heads,
                     head_dim=c.head_dim or c.hidden_size // c.num_attention_heads, eps=c.rms_norm_eps,
                     n_layers=c.num_hidden_layers,
                     qkv_bias=c.attention_bias if c.attention_bias is not None else c.model_type == "qwen2",
                     init_std=c.initializer_range)


def n_params(spec: LayerSpec) -> int:
    """Projections, the three SwiGLU matrices, two RMSNorm scales, and the q/k/v biases where present."""
    biases = int(spec.qkv_bias) * spec.head_dim * (spec.heads + 2 * spec.kv_heads)
    return attention_params(spec) + 3 * spec.hidden * spec.intermediate + 2 * spec.hidden + biases


def flops(spec: LayerSpec, tokens: int) -> int:
    return block_flops(spec, tokens, mlp_matrices=3)


LLAMA = LMFamily(
    name="llama",
    model_types=("llama", "mistral", "qwen2"),
    block=LlamaBlock,
    hf_config=HFConfig,
    spec_from_hf=spec_from_hf,
    n_params=n_params,
    flops=flops,
    lm_norms=("unit", "pretrained", "none"),
    booster_norm="unit",
    pneumollm_norm="pretrained",
    final_norm=rms_final_norm,
    # LlamaForCausalLM (and Mistral, Qwen2) files, then a bare LlamaModel's and Meta's
    final_norm_keys={"weight": ("model.norm.weight", "norm.weight")},
    rotary=True,
    meta=META_FORMAT,
)
