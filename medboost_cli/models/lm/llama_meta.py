"""The LLaMA family's Meta format: params.json + consolidated.NN.pth, as Meta released LLaMA.

Key names differ from Hugging Face's (``META_RENAMES``); some tensors are split across the model-parallel files
(``META_SPLIT_DIM``: the dim along which the parts are concatenated); and the q/k rows of each head are in
another order (RoPE's layout): without RoPE the same permutation on q and k leaves every q.k product unchanged,
so the loader uses the rows as they are, and ``meta_rows_to_hf_`` reorders them for a caller that applies RoPE.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..untrusted import Count, Lenient, Positive, Size, check_heads, validated
from .family import MetaFormat
from .spec import LayerSpec

META_RENAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Column-parallel weights hold a slice of the output features (dim 0), row-parallel ones of the input (dim 1).
META_SPLIT_DIM = {"attention.wq": 0, "attention.wk": 0, "attention.wv": 0, "feed_forward.w1": 0,
                  "feed_forward.w3": 0, "attention.wo": 1, "feed_forward.w2": 1}


class MetaParams(Lenient):
    """Meta's params.json."""

    dim: Size
    n_heads: Count
    n_layers: Count
    n_kv_heads: Count | None = None
    multiple_of: Size = 256
    ffn_dim_multiplier: Positive | None = None
    norm_eps: Positive = 1e-6
    rope_theta: Positive | None = None


def meta_layer_spec(params: dict, where: str) -> LayerSpec:
    """Meta's params.json (already a dict) -> the layer shape; the MLP width follows llama's rule."""
    p = validated(MetaParams, params, where)
    kv_heads = p.n_kv_heads or p.n_heads
    check_heads(p.dim, p.n_heads, kv_heads, where, ("dim", "n_heads", "n_kv_heads"))
    hidden = int(2 * (4 * p.dim) / 3)
    if p.ffn_dim_multiplier:
        hidden = int(p.ffn_dim_multiplier * hidden)
    hidden = p.multiple_of * ((hidden + p.multiple_of - 1) // p.multiple_of)
    return LayerSpec(arch="llama", hidden=p.dim, intermediate=hidden, heads=p.n_heads, kv_heads=kv_heads,
                     head_dim=p.dim // p.n_heads, eps=p.norm_eps, n_layers=p.n_layers)


def meta_rows_to_hf_(block: nn.Module, spec: LayerSpec) -> None:
    """Reorder the q/k projection rows of a layer read from Meta's files into the Hugging Face order that
    ``rope_tables`` assumes (what transformers' conversion script does)."""
    attn = block.self_attn
    with torch.no_grad():
        for proj, heads in ((attn.q_proj, spec.heads), (attn.k_proj, spec.kv_heads)):
            w = proj.weight
            w.copy_(w.view(heads, spec.head_dim // 2, 2, -1).transpose(1, 2).reshape(w.shape))


META_FORMAT = MetaFormat(spec=meta_layer_spec, renames=META_RENAMES, split_dims=META_SPLIT_DIM,
                         rope_rows_=meta_rows_to_hf_)
