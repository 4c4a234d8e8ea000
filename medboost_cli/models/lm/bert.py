"""The BERT family (BERT, MiniLM): post-norm LayerNorm, multi-head attention, GELU MLP.

A BERT layer already ends in LayerNorm and the model has no final norm, so nothing is put after it
(``booster.lm_norm``: none only). Its positions live in the embedding layer, which is not used, so the layer is
position-free as it stands; it takes no rotary tables.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..untrusted import HF_HEAD_NAMES, HFConfig, check_heads
from .family import LMFamily
from .layers import LayerNorm, Rope, SelfAttention, linear
from .spec import LayerSpec, attention_params, block_flops


class BertMLP(nn.Module):
    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden, spec.intermediate)
        self.fc2 = nn.Linear(spec.intermediate, spec.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, F.gelu(linear(self.fc1, x)))


class BertBlock(nn.Module):
    """One BERT encoder layer (post-norm). Checkpoint names are mapped by ``BERT_RENAMES``."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.attn = SelfAttention(spec, out_bias=True)
        self.attn_norm = LayerNorm(spec.hidden, eps=spec.eps)
        self.mlp = BertMLP(spec)
        self.mlp_norm = LayerNorm(spec.hidden, eps=spec.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        if rope is not None:
            raise ValueError("a BERT layer has no rotary positions (its positions live in the unused embedding)")
        x = self.attn_norm(x.float() + self.attn(x, mask).float())
        return self.mlp_norm(x + self.mlp(x).float())


# checkpoint name (after the layer prefix) -> our name
BERT_RENAMES = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.o_proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "output.LayerNorm": "mlp_norm",
}


def spec_from_hf(c: HFConfig, where: str) -> LayerSpec:
    check_heads(c.hidden_size, c.num_attention_heads, c.num_attention_heads, where, HF_HEAD_NAMES)
    return LayerSpec(arch="bert", hidden=c.hidden_size, intermediate=c.intermediate_size,
                     heads=c.num_attention_heads, kv_heads=c.num_attention_heads,
                     head_dim=c.hidden_size // c.num_attention_heads, eps=c.layer_norm_eps,
                     n_layers=c.num_hidden_layers, qkv_bias=True, init_std=c.initializer_range)


def n_params(spec: LayerSpec) -> int:
    """Projections, the two MLP matrices, and the biases and the two LayerNorms (9 x width + the MLP's width)."""
    return attention_params(spec) + 2 * spec.hidden * spec.intermediate + 9 * spec.hidden + spec.intermediate


def flops(spec: LayerSpec, tokens: int) -> int:
    return block_flops(spec, tokens, mlp_matrices=2)


BERT = LMFamily(
    name="bert",
    model_types=("bert",),
    block=BertBlock,
    hf_config=HFConfig,
    spec_from_hf=spec_from_hf,
    n_params=n_params,
    flops=flops,
    no_final_norm="a BERT layer already ends in LayerNorm and its model has no final norm",
    hf_renames=BERT_RENAMES,
)
