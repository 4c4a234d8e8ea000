"""R-LLM (``model: rllm``, the default): a backbone, the booster around its tokens (``booster.*``), a linear head.

Seeds make paired runs share every common part: the backbone and head get the same initial weights whatever the
booster, F_E/F_D their own stream (medboost_cli.seeding)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...seeding import Init, init_seed
from ..backbones import build_backbone
from ..booster import Booster, resolve_proj_init
from ..built import BuiltModel
from ..classifier import Classifier
from ..llm_loading import llm_spec, load_llm_layer
from .base import BenchSpec, FrozenPath, ModelFamily, backbone_config, llm_dtype

if TYPE_CHECKING:
    from ...recipes import Recipe
    from ...tasks import Task

NO_LM_MODES = ("none", "mlp")  # booster modes that read no LM weights (mlp takes only the LM's width)


def build(recipe: Recipe, task: Task, device: torch.device) -> BuiltModel:
    """Backbone, booster and head, each from its own named seed stream."""
    seed, cfg = recipe.seed, recipe.booster
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed, Init.BACKBONE))
        backbone = build_backbone(backbone_config(recipe, task), task.dims)
        loaded = None
        if cfg.mode not in NO_LM_MODES:  # building the layer may draw from the global RNG: seeded afresh below
            loaded = load_llm_layer(cfg.llm, cfg.layer, init=cfg.llm_init, dtype=llm_dtype(recipe, device), seed=seed,
                                    norm=cfg.lm_norm)
        torch.manual_seed(init_seed(seed, Init.BOOSTER))
        proj_init = resolve_proj_init(cfg.proj_init, task.dims)
        if cfg.mode == "none":
            booster = Booster("none", backbone.num_features)
        elif cfg.mode == "mlp":  # F_L removed: only its width is needed, no weights are read
            booster = Booster("mlp", backbone.num_features, None, llm_spec(cfg.llm).hidden, proj_init)
        else:
            booster = Booster(cfg.mode, backbone.num_features, loaded.block, loaded.spec.hidden, proj_init)
            booster.lm.requires_grad_(not cfg.freeze)
        torch.manual_seed(init_seed(seed, Init.HEAD))
        model = Classifier(backbone, booster, task.n_classes)
    frozen = loaded.sha256 if loaded is not None and cfg.freeze else None
    return BuiltModel(model.to(device), loaded, frozen)


def frozen_path(built: BuiltModel) -> FrozenPath | None:
    """F_L at the backbone's tokens."""
    if built.llm is None:
        return None
    return built.model.booster.lm, built.model.backbone.n_tokens, built.llm.spec.hidden


RLLM = ModelFamily(
    name="rllm",
    title="R-LLM",
    build=build,
    dims=(2, 3),
    bench=BenchSpec(option="--booster", column="booster", frozen="F_L", default=("none", "rllm")),
    frozen_path=frozen_path,
    names_lm=lambda recipe: recipe.booster.mode != "none",
    loads_lm=lambda recipe: recipe.booster.mode not in NO_LM_MODES,
    boosted=True,
    default=True,
    gradcam=True,
)
