"""PneumoLLM (``model: pneumollm``; the model and its formulas: medboost_cli/models/pneumollm.py): its recipe
section (``PneumoLLMConfig``, the ``pneumollm.*`` keys), its builder, and its bench variants."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...errors import ConfigError
from ...seeding import Init, init_seed
from ..backbones import TimmViT, build_backbone
from ..built import BuiltModel
from ..pneumollm import PneumoLLMOptions, build_pneumollm
from .base import BenchSpec, FrozenPath, ModelFamily, llm_dtype

if TYPE_CHECKING:
    from ...recipes import Recipe
    from ...tasks import Task


class PneumoLLMConfig(BaseModel):
    """PneumoLLM (``model: pneumollm``; medboost_cli/models/pneumollm.py has the formulas). The LM comes from
    ``booster.llm`` (with booster.llm_init and booster.dtype); the vision encoder from ``backbone``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    source_every: int = Field(4, ge=1, description="source tokens: the vision encoder's CLS token after every k-th "
                              "block (the paper: every 4th of CLIP ViT-L/14's 24 -> 6 tokens)")
    source_norm: Literal["none", "ln_post"] = Field(
        "none", description="none: CLS tokens from the residual stream (the released code's); ln_post: through the "
        "encoder's final LayerNorm")
    freeze_vision: bool = Field(True, description="false trains the vision encoder too (a from-scratch ViT)")
    engine: bool = Field(True, description="the contextual multi-token engine (diagnosis tokens)")
    tokens: int = Field(4, ge=1, description="m, the number of diagnosis tokens (the paper: 4, Fig. 6b)")
    engine_hidden: int = Field(12, ge=1, description="the engine MLP's hidden width (the released code's: 12)")
    emitter: bool = Field(True, description="the information emitter: every token attends to the source tokens only")
    adapters: bool = Field(True, description="RepAdapters before attention in every vision and LM block")
    adapter_dim: int = Field(8, ge=1, description="adapter bottleneck width")
    adapter_groups: int = Field(2, ge=1, description="groups of the adapter's up-projection (the released code's: 2)")
    adapter_dropout: float = Field(0.1, ge=0, lt=1, description="dropout inside the adapter (the released code's)")
    proj_hidden: int = Field(128, ge=1, description="the projector's bottleneck (Linear-SiLU-Linear) into the LM")
    llm: bool = Field(True, description="false removes the LM layers (paper Table 4, 'w/o LLaMA')")
    llm_layers: int | None = Field(None, description="null: every layer of the LM; N > 0: the first N; N < 0: the "
                                   "last -N")
    rope: bool = Field(True, description="rotary positions 0..d+m-1 in the LM's attention (the released code's); "
                       "LLaMA-family layers only")
    final_norm: Literal["auto", "pretrained", "unit", "none"] = Field(
        "auto", description="the norm after the last LM layer. auto: the LM's own final norm (pretrained) for "
        "LLaMA-family layers, none for BERT layers")

    @model_validator(mode="after")
    def _parts_fit(self) -> PneumoLLMConfig:
        if self.emitter and not (self.engine and self.llm):
            raise ValueError("pneumollm.emitter=true needs pneumollm.engine=true and pneumollm.llm=true (it masks the "
                             "diagnosis tokens in the LM's attention); set pneumollm.emitter=false")
        if self.llm_layers == 0:
            raise ValueError("pneumollm.llm_layers=0: use pneumollm.llm=false to remove the LM")
        return self


def model_options(cfg: PneumoLLMConfig) -> PneumoLLMOptions:
    """The section's keys that shape the model itself, as the model's own dataclass."""
    return PneumoLLMOptions(**{f.name: getattr(cfg, f.name) for f in fields(PneumoLLMOptions)})


def build(recipe: Recipe, task: Task, device: torch.device) -> BuiltModel:
    """The vision encoder from ``backbone``, the LM from ``booster.llm`` (its init and dtype), the rest from
    ``pneumollm``."""
    cfg, booster = recipe.pneumollm, recipe.booster
    if not booster.freeze:
        raise ConfigError("booster.freeze=false: PneumoLLM keeps its LM frozen (only its adapters train); unset it")
    dtype = llm_dtype(recipe, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(recipe.seed, Init.BACKBONE))
        backbone = build_backbone(recipe.backbone, 2)
        if not isinstance(backbone, TimmViT):
            raise ConfigError(f"model=pneumollm needs a ViT with a CLS token as its vision encoder, not "
                              f"{recipe.backbone.name}")
        model, stack, frozen = build_pneumollm(
            backbone, task.n_classes, model_options(cfg), llm=booster.llm, with_lm=cfg.llm, llm_layers=cfg.llm_layers,
            llm_init=booster.llm_init, lm_dtype=dtype, final_norm=cfg.final_norm, seed=recipe.seed)
    return BuiltModel(model.to(device), None, frozen, stack)


def frozen_path(built: BuiltModel) -> FrozenPath | None:
    """The stack of LM layers (with their adapters) at the d + m tokens it sees."""
    model = built.model
    if model.lm is None:
        return None
    tokens = model.n_source + (model.engine.tokens if model.engine is not None else 0)
    return model.lm, tokens, built.stack.spec.hidden


# `medboost bench --model pneumollm --variant ...`: pneumollm.* keys over the recipe's.
VARIANTS = {
    "pneumollm": {},
    "no-llm": {"llm": False, "emitter": False},  # Table 4 (the emitter masks the LM's attention: none without it)
    "simplified": {"engine": False, "emitter": False},  # Table 5
}

PNEUMOLLM = ModelFamily(
    name="pneumollm",
    title="PneumoLLM",
    build=build,
    dims=(2,),
    bench=BenchSpec(option="--variant", column="variant", frozen="LM stack", default=("pneumollm", "no-llm"),
                    variants=VARIANTS, caption=" (PneumoLLM)"),
    frozen_path=frozen_path,
    names_lm=lambda recipe: recipe.pneumollm.llm,
    loads_lm=lambda recipe: recipe.pneumollm.llm,
    section=PneumoLLMConfig,
    booster_keys=("llm", "llm_init", "dtype"),
)
