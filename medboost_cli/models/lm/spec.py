"""The shape of one LM layer (``LayerSpec``), read from a checkpoint's config by its family's parser."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    """Shape and family of one LM layer. ``arch`` names its entry in the LM family registry (``lm.FAMILIES``),
    which decides everything that differs between families: the block, the key names, the norms, the counts."""

    arch: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    n_layers: int
    qkv_bias: bool = False
    init_std: float = 0.02
    rope_theta: float = 10000.0  # RoPE's base, used only when a caller applies RoPE (families with rotary)


def attention_params(spec: LayerSpec) -> int:
    """Weights of the q, k, v and output projections (no biases)."""
    return spec.hidden * spec.head_dim * (2 * spec.heads + 2 * spec.kv_heads)


def attention_flops(spec: LayerSpec, tokens: int) -> int:
    """Forward FLOPs of the attention on ``tokens`` tokens (2 per multiply-add): the four projections, then the
    scores and the mixing of the values."""
    linear = 2 * tokens * attention_params(spec)
    return linear + 2 * 2 * tokens * tokens * spec.heads * spec.head_dim


def block_flops(spec: LayerSpec, tokens: int, mlp_matrices: int) -> int:
    """Forward FLOPs of attention plus an MLP of ``mlp_matrices`` hidden x intermediate matrices (3 for a gated
    MLP such as LLaMA's, 2 for BERT's and Phi's)."""
    return attention_flops(spec, tokens) + 2 * tokens * spec.hidden * spec.intermediate * mlp_matrices
