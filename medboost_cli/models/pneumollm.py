"""PneumoLLM (Song et al. 2024): a frozen vision encoder feeds a few tokens through EVERY layer of a frozen LM.

With V the vision encoder's blocks, X the source tokens, X^ the diagnosis tokens, L_1..L_K the LM's layers:

    X   = [CLS after block k, 2k, ..., dk of V]          (B, d, n)   d = depth // k   pneumollm.source_every = k
    M   = softmax_over_d( W2 ReLU(W1 X) )                (B, d, m)   the contextual multi-token engine (trained)
    X^  = M^T X                                          (B, m, n)   m = pneumollm.tokens: diagnosis tokens
    Y   = P([X; X^]),  P = Linear(n,128) SiLU Linear(128,n')          the projector into the LM (trained)
    Z   = N(L_K(... L_1(Y; E, R) ...; E, R))             (B, d+m, n')
    y   = head(mean over the d+m tokens of Z),  head = Linear(n', classes, bias=False)

E, the information emitter (Eq. 2), is the attention mask M_ij = -inf for j > d, 0 otherwise, in every layer:
every token attends to the d source tokens only, so a source token never sees a diagnosis token, and a
diagnosis token sees neither the other diagnosis tokens nor itself (passed as a boolean "may attend" matrix,
``emitter_mask``). R: RoPE on positions 0..d+m-1 (``pneumollm.rope``; the released code keeps LLaMA's RoPE).
N: the LM's final norm (``pneumollm.final_norm``; the released code loads LLaMA's own final RMSNorm weights).
X comes from the residual stream, without the encoder's final LayerNorm or projection (``source_norm: none``,
the released code's; ``ln_post`` puts that LayerNorm on each CLS token).

Adapters (RepAdapter, the released code's ``RepAdapter_Router``): in every vision block used and every LM layer,
on the input of the attention only, after that block's pre-norm (LLaMA, CLIP) or on the block input (BERT is
post-norm); the residual path keeps the unadapted x:  attn_in = x + U(dropout(D x)), D = Linear(width, 8)
(xavier-uniform, zero bias), U = a 2-group Linear(8, width) (zero-initialised, so the model starts as if without
adapters), dropout 0.1. In the released code ``scale`` and the temperature are arguments that do nothing.

Trainable: adapters, engine, projector, head; frozen: the vision encoder (``freeze_vision``) and the LM.
At the paper's shape (CLIP ViT-L/14: 24 blocks of width 1024; LLaMA-7B: 32 layers of width 4096; m = 4, 2 classes)
this is 24 x 13,320 (vision adapters) + 32 x 53,256 (LM adapters) + 12,352 (engine) + 659,584 (projector)
+ 8,192 (head) = 2,704,000: the paper's 2.70M. Without the engine 2,691,648: Table 5's 2.69M.

Ablation switches (paper tables):

    Table 4  w/o LLaMA                 pneumollm.llm=false, emitter=false: Y goes straight to the mean and head
    Table 5  simplified PneumoLLM      pneumollm.engine=false, emitter=false
    Table 6  baseline                  engine=false, emitter=false, adapters=false
             + adapter                 engine=false, emitter=false
             + engine                  emitter=false
             + engine + emitter        (the defaults)
    Fig. 6b  diagnosis tokens m        pneumollm.tokens

Loss: the engine's, from the task type (cross-entropy on the logits for binary and multi-class tasks), which is
the paper's Eq. 5 (BCE on one probability: softmax over two logits is a sigmoid of their difference). The released
code instead applies BCEWithLogits to two independent logits with one-hot targets: (softplus(-z_y) +
softplus(z_other)) / 2, which is NOT cross-entropy (softplus(z_other - z_y)): it also pulls each logit's absolute
level, not only their difference, so gradients and the optimum path differ; its scores are softmax(z) as ours.

Where the released code (CodeMonsterPHD/PneumoLLM at d393e4f) differs (we follow the paper): its engine is left
frozen at random init by a parameter-name loop (yet counted in its 2.70M); it normalises with ImageNet's mean/std
(we use CLIP's); its CLIP runs fp16. Its emitter mask is applied in every layer, as here; only its first commit
(35caae5) passed the layers an all-zero mask, which ``pneumollm.emitter=false`` reproduces.
OpenAI's CLIP uses QuickGELU: ``clip-l14`` is timm's quickgelu variant of ``vit_large_patch14_clip_224.openai``
(same weights).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..seeding import Init, init_seed
from .backbones import TimmViT
from .llm import LayerSpec, resolve_lm_norm, rope_tables
from .lm import lm_family
from .llm_loading import LoadedStack, llm_spec, load_llm_layers, weights_sha256


@dataclass(frozen=True)
class PneumoLLMOptions:
    """The model's structure and its switches (the ``pneumollm.*`` keys of the same names; defaults: the paper's)."""

    source_every: int = 4  # k: the CLS token after every k-th vision block
    source_norm: str = "none"  # none: from the residual stream; ln_post: through the encoder's final LayerNorm
    freeze_vision: bool = True
    engine: bool = True  # the contextual multi-token engine
    tokens: int = 4  # m, the diagnosis tokens
    engine_hidden: int = 12
    emitter: bool = True  # every token attends to the source tokens only
    adapters: bool = True
    adapter_dim: int = 8
    adapter_groups: int = 2
    adapter_dropout: float = 0.1
    proj_hidden: int = 128
    rope: bool = True


class RepAdapter(nn.Module):
    """x + U(dropout(D x)): D a Linear(dim, hidden), U a zero-initialised grouped Linear(hidden, dim) (the
    released code's Conv1d(hidden, dim, 1, groups=g): output group j reads hidden units j*hidden/g onwards)."""

    def __init__(self, dim: int, hidden: int = 8, groups: int = 2, dropout: float = 0.1):
        super().__init__()
        if hidden % groups or dim % groups:
            raise ConfigError(f"pneumollm.adapter_groups={groups} must divide the adapter width {hidden} and the "
                              f"token width {dim}")
        self.groups = groups
        self.down = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.up_weight = nn.Parameter(torch.zeros(groups, dim // groups, hidden // groups))
        self.up_bias = nn.Parameter(torch.zeros(dim))
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.down(x.to(self.down.weight.dtype))).unflatten(-1, (self.groups, -1))
        return x + (torch.einsum("...gi,goi->...go", h, self.up_weight.to(h.dtype)).flatten(-2) + self.up_bias)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class AdaptedAttention(nn.Module):
    """``attention(adapter(x), ...)``: the adapter changes what the attention reads; the block's residual keeps x."""

    def __init__(self, attention: nn.Module, adapter: RepAdapter):
        super().__init__()
        self.adapter = adapter
        self.attention = attention

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.attention(self.adapter(x), *args, **kwargs)


def add_adapters(blocks, dim: int, cfg: PneumoLLMOptions) -> None:
    """Wrap the attention of each block (timm and BERT: ``attn``; LLaMA: ``self_attn``) with a fresh adapter."""
    for block in blocks:
        name = "self_attn" if hasattr(block, "self_attn") else "attn"
        adapter = RepAdapter(dim, cfg.adapter_dim, cfg.adapter_groups, cfg.adapter_dropout)
        setattr(block, name, AdaptedAttention(getattr(block, name), adapter))


class TokenEngine(nn.Module):
    """The contextual multi-token engine: m diagnosis tokens, each a softmax-weighted sum of the d source tokens."""

    def __init__(self, dim: int, tokens: int, hidden: int):
        super().__init__()
        self.tokens = tokens
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, tokens))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, n) -> M (B, d, m), each column a distribution over the d source tokens."""
        return self.score(x.float()).float().softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights(x).transpose(1, 2) @ x.float()


def projector(dim: int, hidden: int, lm_dim: int) -> nn.Sequential:
    """Linear-SiLU-Linear from the vision width into the LM's (the released code's AdapterMLP: xavier, zero bias)."""
    layers = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, lm_dim))
    for linear in (layers[0], layers[2]):
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
    return layers


def emitter_mask(n: int, n_source: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Eq. 2 as a boolean (n, n) "may attend" matrix: True (M_ij = 0) for keys j among the first ``n_source``,
    False (M_ij = -inf) for the rest, whatever the query i."""
    return (torch.arange(n, device=device) < n_source).expand(n, n)


class LMStack(nn.Module):
    """The LM's layers in order, each with the emitter mask and RoPE when asked, then the final norm."""

    def __init__(self, blocks: list[nn.Module], norm: nn.Module | None, spec: LayerSpec, n_source: int,
                 emitter: bool, rope: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm if norm is not None else nn.Identity()
        self.spec, self.n_source, self.emitter, self.rope = spec, n_source, emitter, rope

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[1]
        mask = emitter_mask(n, self.n_source, y.device) if self.emitter else None
        rope = rope_tables(n, self.spec.head_dim, self.spec.rope_theta, y.device) if self.rope else None
        for block in self.blocks:
            y = block(y, mask, rope)
        return self.norm(y)

    def extra_repr(self) -> str:
        return f"n_source={self.n_source}, emitter={self.emitter}, rope={self.rope}"


def source_tokens(backbone: TimmViT, x: torch.Tensor, every: int, n_source: int, norm: str) -> torch.Tensor:
    """The CLS token of the residual stream after blocks every, 2*every, ... (n_source of them): (B, d, n).
    Blocks after the last one taken are not run."""
    h = backbone.embed(x)
    taken = []
    for i, block in enumerate(backbone.blocks[: n_source * every]):
        h = block(h)
        if (i + 1) % every == 0:
            taken.append(h[:, 0])
    tokens = torch.stack(taken, dim=1)
    return backbone.final_norm(tokens) if norm == "ln_post" else tokens


class PneumoLLM(nn.Module):
    """Vision encoder -> source tokens (+ diagnosis tokens) -> projector -> LM layers -> mean -> linear head."""

    def __init__(self, backbone: TimmViT, stack: LoadedStack | None, lm_dim: int, n_classes: int,
                 cfg: PneumoLLMOptions, seed: int | None = None):
        """Freezes what ``cfg`` freezes and inserts the adapters. With ``seed``, the engine, the projector and
        the adapters each draw from their own offset of the booster's init stream, the head from the head's
        (medboost_cli.seeding): a part's initial weights do not depend on which other parts an ablation keeps."""
        super().__init__()
        depth = len(backbone.blocks)
        if cfg.source_every > depth:
            raise ConfigError(f"pneumollm.source_every={cfg.source_every} exceeds the vision encoder's {depth} blocks")
        self.backbone = backbone
        self.every, self.n_source, self.source_norm = cfg.source_every, depth // cfg.source_every, cfg.source_norm
        if cfg.freeze_vision:
            backbone.requires_grad_(False)
        dim = backbone.num_features

        def seeded(part: Init, k: int = 0) -> None:
            if seed is not None:  # offsets far above any seed: no part shares another seed's stream
                torch.manual_seed(init_seed(seed, part) + 1_000_000 * k)

        seeded(Init.BOOSTER, 0)
        self.engine = TokenEngine(dim, cfg.tokens, cfg.engine_hidden) if cfg.engine else None
        seeded(Init.BOOSTER, 1)
        self.project = projector(dim, cfg.proj_hidden, lm_dim)
        self.lm = None
        if stack is not None:
            self.lm = LMStack(stack.blocks, stack.norm, stack.spec, self.n_source, cfg.emitter, cfg.rope)
            self.lm.requires_grad_(False)
        if cfg.adapters:
            seeded(Init.BOOSTER, 2)
            add_adapters(backbone.blocks[: self.n_source * self.every], dim, cfg)
            if self.lm is not None:
                add_adapters(self.lm.blocks, lm_dim, cfg)
        seeded(Init.HEAD)
        self.head = nn.Linear(lm_dim, n_classes, bias=False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[X; X^]: the source tokens, then the diagnosis tokens (B, d + m, n)."""
        src = source_tokens(self.backbone, x, self.every, self.n_source, self.source_norm)
        return src if self.engine is None else torch.cat([src, self.engine(src).to(src.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.tokens(x))
        if self.lm is not None:
            y = self.lm(y)
        return self.head(y.mean(dim=1))


# ------------------------------------------------------------------------------------------------- building


def lm_layer_indices(n_layers: int, choice: int | None) -> list[int]:
    """``pneumollm.llm_layers``: None every layer, N > 0 the first N, N < 0 the last -N."""
    if choice is None:
        return list(range(n_layers))
    if abs(choice) > n_layers:
        raise ConfigError(f"pneumollm.llm_layers={choice}: the LM has only {n_layers} layers")
    return list(range(choice)) if choice > 0 else list(range(n_layers + choice, n_layers))


def resolve_final_norm(choice: str, spec: LayerSpec) -> str:
    """``pneumollm.final_norm``: auto is the LM family's choice (LLaMA, Phi: its own final norm, pretrained; BERT:
    none); a norm the family does not take is an error."""
    return resolve_lm_norm(choice, spec, "pneumollm.final_norm", lm_family(spec.arch).pneumollm_norm)


def build_pneumollm(backbone: TimmViT, n_classes: int, cfg: PneumoLLMOptions, *, llm: str, with_lm: bool = True,
                    llm_layers: int | None = None, llm_init: str = "pretrained", lm_dtype: torch.dtype = torch.float32,
                    final_norm: str = "auto", seed: int | None = None) -> tuple[PneumoLLM, LoadedStack | None,
                                                                                   str | None]:
    """(model on the CPU, the LM layers read, the hash of every frozen weight) around a built vision encoder.
    ``llm`` is the LM's source; its width is the projector's output, and its layers (``llm_layers``, as
    ``lm_layer_indices`` reads it) are part of the model unless ``with_lm`` is false (Table 4's "w/o LLM"). The
    caller holds the global RNG state (``torch.random.fork_rng``) and seeded the vision encoder's init."""
    vision_sha = None
    if cfg.freeze_vision:  # hashed before the adapters go in: the frozen weights alone
        backbone.requires_grad_(False)
        vision_sha = weights_sha256(backbone)
    stack = None
    spec = llm_spec(llm)
    if with_lm:
        if cfg.rope and not lm_family(spec.arch).rotary:
            raise ConfigError(f"pneumollm.rope=true applies RoPE, which medboost does not apply to "
                              f"{llm} (an LM of the {spec.arch} family): set pneumollm.rope=false")
        stack = load_llm_layers(llm, lm_layer_indices(spec.n_layers, llm_layers), init=llm_init, dtype=lm_dtype,
                                seed=seed, norm=resolve_final_norm(final_norm, spec), hf_rope_order=cfg.rope)
    model = PneumoLLM(backbone, stack, spec.hidden, n_classes, cfg, seed=seed)
    parts = [h for h in (stack.sha256 if stack else None, vision_sha) if h is not None]
    frozen = weights_digest(parts) if parts else None
    return model, stack, frozen


def weights_digest(hashes: list[str]) -> str:
    return hashlib.sha256(":".join(hashes).encode()).hexdigest()
