"""Building blocks every LM family's layer is made of: norms computed in fp32, RoPE tables, and a multi-head
(or grouped-query) attention that is bidirectional and position-free unless its caller asks otherwise.

Precision: the weights may be stored in bf16; norms and the residual stream run in fp32, and each linear casts
its input to the weight dtype, so a layer works with or without autocast on any device.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import LayerSpec

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (N, head_dim)


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with ``x`` cast to the layer's weight dtype."""
    return layer(x.to(layer.weight.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the stored dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)


class NormedLayer(nn.Module):
    """An LM layer followed by the LM's final norm: ``norm(layer(x))``."""

    def __init__(self, layer: nn.Module, norm: nn.Module):
        super().__init__()
        self.layer = layer
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(x))


def rope_tables(n: int, head_dim: int, theta: float, device: torch.device | str = "cpu") -> Rope:
    """RoPE's (cos, sin) for positions 0..n-1 in the layout of Hugging Face LLaMA weights: the two halves of
    each head's dimensions are rotated together (``rotate_half``), frequency theta^(-2i/head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(n, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(t: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate (B, heads, N, head_dim) queries or keys by their positions, in fp32."""
    cos, sin = rope
    x = t.float()
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(t.dtype)


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) attention; bidirectional and position-free unless the caller passes a
    ``mask`` (boolean, True where a query may attend to a key) or ``rope`` tables. No causal mask:
    ``scaled_dot_product_attention`` runs with ``is_causal=False``."""

    def __init__(self, spec: LayerSpec, out_bias: bool):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden, spec.heads * spec.head_dim, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(spec.hidden, spec.kv_heads * spec.head_dim, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(spec.hidden, spec.kv_heads * spec.head_dim, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.heads * spec.head_dim, spec.hidden, bias=out_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = linear(self.q_proj, x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = linear(self.k_proj, x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = linear(self.v_proj, x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        return linear(self.o_proj, out.transpose(1, 2).reshape(b, n, -1))


def rms_final_norm(spec: LayerSpec) -> nn.Module:
    """An RMSNorm of the layer's width and eps, weight 1 (a final norm at its initial weights)."""
    return RMSNorm(spec.hidden, spec.eps)


def layer_final_norm(spec: LayerSpec) -> nn.Module:
    """A LayerNorm of the layer's width and eps, weight 1 and bias 0 (a final norm at its initial weights)."""
    return LayerNorm(spec.hidden, eps=spec.eps)
