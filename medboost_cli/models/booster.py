"""The booster: wraps a backbone's token sequence (B, N, D) with a frozen LM layer F_L between two linear maps.

F_E: D -> D_lm and F_D: D_lm -> D are bias-free linear maps. With x the backbone's tokens:

    none     z = x
    rllm     z = F_D(F_L(F_E x) + F_E x)              R-LLM, the paper's Eq. 2
    out      z = x + F_D(F_L(F_E x))                  "Out R-LLM" (Table 6)
    hybrid   z = x + F_D(F_L(F_E x) + F_E x)          both residuals (Table 6)
    mlp      z = F_D(F_E x)                           F_L removed, F_E/F_D kept: the capacity control (Table 5)

F_L = N(L(.)): the LM's layer L, then the norm N of ``booster.lm_norm`` (``llm.NormedLayer``), as the released
code's ``LLaMATransformer(first_layer=31)``: unit (an RMSNorm of weight 1, the released code's; auto's choice for
LLaMA-family layers), pretrained (the LM's final norm weights) or none (N = identity; auto's choice for BERT).

F_E/F_D initialisation (``booster.proj_init``): trunc_normal (std 0.02, the released 2D code's) or default
(nn.Linear's, the released 3D code's); auto follows the released code per dimensionality. The released 2D MLP
control computes x + F_D(F_E x); its 3D one (Table 5) computes F_D(F_E x), which is ``mlp``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

PROJ_INITS = ("auto", "trunc_normal", "default")


def resolve_proj_init(choice: str, dims: int) -> str:
    """``booster.proj_init`` for a task of ``dims`` dimensions: auto is trunc_normal in 2D, default in 3D."""
    if choice == "auto":
        return "trunc_normal" if dims == 2 else "default"
    return choice


class Booster(nn.Module):
    def __init__(self, mode: str, dim: int, lm: nn.Module | None = None, lm_dim: int | None = None,
                 init: str = "default"):
        super().__init__()
        self.mode = mode
        if mode == "none":
            return
        if lm_dim is None or (mode != "mlp" and lm is None):
            raise ValueError(f"booster mode '{mode}' needs an LM layer and its width")
        if init not in PROJ_INITS[1:]:
            raise ValueError(f"booster init '{init}' is not one of {PROJ_INITS[1:]}")
        self.encode = nn.Linear(dim, lm_dim, bias=False)  # F_E
        self.lm = lm if mode != "mlp" else None  # F_L
        self.decode = nn.Linear(lm_dim, dim, bias=False)  # F_D
        if init == "trunc_normal":
            for linear in (self.encode, self.decode):
                nn.init.trunc_normal_(linear.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        r = self.encode(x)
        if self.mode == "mlp":
            return self.decode(r)
        h = self.lm(r)
        if self.mode == "rllm":
            return self.decode(h + r)
        if self.mode == "out":
            return x + self.decode(h)
        return x + self.decode(h + r)  # hybrid

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
