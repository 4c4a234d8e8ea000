"""F_L: one transformer layer of a pretrained language model, position-free and bidirectional.

Two layer families, each readable top to bottom:

* ``LlamaBlock`` (LLaMA, Mistral, Qwen2): pre-norm RMSNorm, grouped-query attention, SwiGLU MLP.
* ``BertBlock`` (BERT, MiniLM): post-norm LayerNorm, multi-head attention, GELU MLP.

A LLaMA-family layer ends without a norm: in the LM its output goes on through the next layers and, after the
last, the model's final RMSNorm. ``NormedLayer`` puts that norm after the layer (``booster.lm_norm``), as the
released R-LLM code does (its ``LLaMATransformer(first_layer=31)`` runs layer 31, then ``self.norm``).

Both drop what ties them to text: no rotary/absolute position embedding (RoPE lives in the attention of
LLaMA models and is simply not applied; BERT's positions live in its embedding layer, which is not used) and
no causal mask (``scaled_dot_product_attention`` is called with ``is_causal=False`` and no mask). That is what
R-LLM calls them with. A caller that wants either passes it (PneumoLLM, ``pneumollm.py``): ``mask``, a boolean
(N, N) "may attend" matrix, and ``rope``, the (cos, sin) tables of ``rope_tables`` for LLaMA-family layers.

Precision: the weights may be stored in bf16; norms and the residual stream run in fp32, and each linear
casts its input to the weight dtype, so the layer works with or without autocast on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, ModelFileError


@dataclass(frozen=True)
class LayerSpec:
    """Shape and flavour of one LM layer, read from the checkpoint's config (``untrusted.hf_layer_spec`` and
    ``meta_layer_spec``, which check it)."""

    arch: Literal["llama", "bert"]
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    n_layers: int
    qkv_bias: bool = False
    init_std: float = 0.02
    rope_theta: float = 10000.0  # RoPE's base, used only when a caller applies RoPE (LLaMA-family layers)

    @property
    def n_params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        if self.arch == "llama":
            return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden + int(self.qkv_bias) * self.head_dim * (
                self.heads + 2 * self.kv_heads
            )
        return attn + 2 * self.hidden * self.intermediate + 9 * self.hidden + self.intermediate  # + biases, 2 LNs


# Shapes known without a checkpoint (for `random:NAME` and benchmarks).
KNOWN_SPECS = {
    "llama-7b": LayerSpec("llama", 4096, 11008, 32, 32, 128, 1e-6, n_layers=32),
    "llama-13b": LayerSpec("llama", 5120, 13824, 40, 40, 128, 1e-6, n_layers=40),
    "minilm": LayerSpec("bert", 384, 1536, 12, 12, 32, 1e-12, n_layers=6, qkv_bias=True),
}


# ------------------------------------------------------------------------------------------------ layers


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return layer(x.to(layer.weight.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class NormedLayer(nn.Module):
    """An LM layer followed by the LM's final norm: ``norm(layer(x))``."""

    def __init__(self, layer: nn.Module, norm: nn.Module):
        super().__init__()
        self.layer = layer
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(x))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the stored dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)


Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (N, head_dim)


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


def meta_rows_to_hf_(block: nn.Module, spec: LayerSpec) -> None:
    """Reorder the q/k projection rows of a layer read from Meta's files into the Hugging Face order that
    ``rope_tables`` assumes (what transformers' conversion script does). Without RoPE the order is irrelevant,
    which is why the loader leaves Meta's rows as they are."""
    attn = block.self_attn
    with torch.no_grad():
        for proj, heads in ((attn.q_proj, spec.heads), (attn.k_proj, spec.kv_heads)):
            w = proj.weight
            w.copy_(w.view(heads, spec.head_dim // 2, 2, -1).transpose(1, 2).reshape(w.shape))


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) attention; bidirectional and position-free unless the caller passes a
    ``mask`` (boolean, True where a query may attend to a key) or ``rope`` tables."""

    def __init__(self, spec: LayerSpec, out_bias: bool):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden, spec.heads * spec.head_dim, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(spec.hidden, spec.kv_heads * spec.head_dim, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(spec.hidden, spec.kv_heads * spec.head_dim, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.heads * spec.head_dim, spec.hidden, bias=out_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = _linear(self.q_proj, x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = _linear(self.k_proj, x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = _linear(self.v_proj, x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        return _linear(self.o_proj, out.transpose(1, 2).reshape(b, n, -1))


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


class BertMLP(nn.Module):
    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden, spec.intermediate)
        self.fc2 = nn.Linear(spec.intermediate, spec.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(self.fc2, F.gelu(_linear(self.fc1, x)))


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
# Buffers some checkpoints carry that a position-free layer does not use.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def build_block(spec: LayerSpec) -> nn.Module:
    return LlamaBlock(spec) if spec.arch == "llama" else BertBlock(spec)


# booster.lm_norm: the norm after F_L's layer. unit: the final RMSNorm with weight 1 (the released code's: its
# loader copies only layers.31.*, so that norm keeps its initial weight); pretrained: the model's own final norm
# weights; none: the bare layer. auto: unit for LLaMA-family layers, none for BERT layers, which end in LayerNorm.
LM_NORMS = ("auto", "unit", "pretrained", "none")


def resolve_lm_norm(choice: str, spec: LayerSpec) -> str:
    """``booster.lm_norm`` for a layer of ``spec``: auto resolved; unit/pretrained on a BERT layer is an error."""
    if choice not in LM_NORMS:
        raise ConfigError(f"booster.lm_norm={choice} is not one of {', '.join(LM_NORMS)}")
    if choice == "auto":
        return "unit" if spec.arch == "llama" else "none"
    if spec.arch == "bert" and choice != "none":
        raise ConfigError(
            f"booster.lm_norm={choice} is for LLaMA-family layers; a BERT layer already ends in LayerNorm and its "
            f"model has no final norm: use booster.lm_norm=auto or none"
        )
    return choice


def with_final_norm(layer: nn.Module, spec: LayerSpec, weight: torch.Tensor | None = None) -> NormedLayer:
    """``layer`` followed by an RMSNorm with the model's eps and ``weight`` (ones when None)."""
    norm = RMSNorm(spec.hidden, spec.eps)
    if weight is not None:
        if tuple(weight.shape) != (spec.hidden,):
            raise ModelFileError(f"the final norm weight has shape {tuple(weight.shape)}, not ({spec.hidden},)")
        norm.weight = nn.Parameter(weight, requires_grad=norm.weight.requires_grad)
    return NormedLayer(layer, norm)


def rename_key(key: str, arch: str, scheme: str) -> str:
    """Map a checkpoint key (layer prefix removed) onto ``build_block``'s parameter names."""
    table = META_RENAMES if scheme == "meta" else BERT_RENAMES if arch == "bert" else {}
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :]
    return key


def random_init_(block: nn.Module, spec: LayerSpec, generator: torch.Generator) -> None:
    """The LM's own initialisation for a fresh layer: normal(0, initializer_range) weights, zero biases,
    unit norm scales (what transformers' ``_init_weights`` does for LLaMA and BERT)."""
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) * spec.init_std)


def shuffle_(block: nn.Module, generator: torch.Generator) -> None:
    """Permute each tensor's entries: the same values, none of the learned structure."""
    with torch.no_grad():
        for p in block.parameters():
            flat = p.reshape(-1)
            p.copy_(flat[torch.randperm(flat.numel(), generator=generator)].view_as(p))


def layer_flops(spec: LayerSpec, tokens: int) -> int:
    """Forward FLOPs of one layer on ``tokens`` tokens (2 per multiply-add; attention scores and mixing)."""
    linear = 2 * tokens * (spec.hidden * spec.head_dim * (2 * spec.heads + 2 * spec.kv_heads))
    mlp = 2 * tokens * spec.hidden * spec.intermediate * (3 if spec.arch == "llama" else 2)
    attn = 2 * 2 * tokens * tokens * spec.heads * spec.head_dim
    return linear + mlp + attn


def normalise_layer_index(layer: int, spec: LayerSpec, where: str) -> int:
    index = layer + spec.n_layers if layer < 0 else layer
    if not 0 <= index < spec.n_layers:
        raise ConfigError(
            f"booster.layer={layer} is out of range for {where}, which has {spec.n_layers} layers (0..{spec.n_layers - 1})"
        )
    return index
