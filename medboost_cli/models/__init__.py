"""Models compose: a backbone produces tokens, the booster wraps them, a linear head reads the pooled CLS token.
``model: pneumollm`` builds PneumoLLM instead (``pneumollm.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..hardware import auto_is_bf16
from ..recipes import BackboneConfig, Recipe
from ..seeding import Init, init_seed
from ..tasks import Task
from .backbones import BACKBONES, build_backbone, check_backbone
from .booster import Booster, resolve_proj_init
from .llm_loading import LoadedLayer, LoadedStack, llm_spec, load_llm_layer
from .pneumollm import build_pneumollm

__all__ = ["BACKBONES", "BuiltModel", "Classifier", "build_model", "check_model", "count_parameters"]


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, booster: Booster, n_outputs: int):
        super().__init__()
        self.backbone = backbone
        self.booster = booster
        self.head = nn.Linear(backbone.num_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_tokens(x, self.booster)  # the backbone applies the booster at its site
        return self.head(self.backbone.pool(tokens))


@dataclass
class BuiltModel:
    model: nn.Module  # a Classifier, or a PneumoLLM; either has the vision encoder as ``backbone``
    llm: LoadedLayer | None  # the LM layer and where it came from (None for mode none/mlp, and for PneumoLLM)
    frozen_sha256: str | None  # hash of the frozen weights (F_L; PneumoLLM: its LM and frozen vision encoder),
    # stored in checkpoints instead of the weights
    stack: LoadedStack | None = None  # PneumoLLM's LM layers


def llm_dtype(recipe: Recipe, device: torch.device) -> torch.dtype:
    """A frozen F_L is stored in bf16 where the device runs bf16 natively; a trained one always in fp32."""
    if not recipe.booster.freeze:
        return torch.float32
    choice = recipe.booster.dtype
    if choice == "bf16" or (choice == "auto" and auto_is_bf16(device)):
        return torch.bfloat16
    return torch.float32


def backbone_config(recipe: Recipe, task: Task) -> BackboneConfig:
    """``recipe.backbone`` as the backbone is built: 3D backbones take the volume at its own size."""
    if task.dims == 3 and recipe.backbone.img_size is None:
        return recipe.backbone.model_copy(update={"img_size": recipe.data.size})
    return recipe.backbone


def check_model(recipe: Recipe, task: Task) -> None:
    """The backbone family's checks of the recipe's backbone.* keys, before any data is read or model built."""
    check_backbone(backbone_config(recipe, task), task.dims)


def build_model(recipe: Recipe, task: Task, device: torch.device | str = "cpu") -> BuiltModel:
    """Build backbone, booster and head with seeds that make paired runs share every common part:
    the backbone and head get the same initial weights whatever the booster, F_E/F_D their own stream."""
    device = torch.device(device)
    if recipe.model == "pneumollm":
        with torch.random.fork_rng(devices=[]):
            model, stack, frozen = build_pneumollm(recipe, task, llm_dtype(recipe, device))
        return BuiltModel(model.to(device), None, frozen, stack)
    seed = recipe.seed
    cfg = recipe.booster
    with torch.random.fork_rng(devices=[]):  # every part from its own named stream (medboost_cli.seeding)
        torch.manual_seed(init_seed(seed, Init.BACKBONE))
        backbone = build_backbone(backbone_config(recipe, task), task.dims)
        loaded = None
        if cfg.mode not in ("none", "mlp"):  # building the layer may draw from the global RNG: seeded afresh below
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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def check_frozen_hash(built: BuiltModel, expected: str | None, where: str) -> None:
    if expected != built.frozen_sha256:
        raise ConfigError(
            f"{where}: the frozen LM layer differs from the one this run was trained with "
            f"(hash {str(built.frozen_sha256)[:12]} vs {str(expected)[:12]}); point booster.llm (and, for PneumoLLM, "
            f"backbone.weights) at the same checkpoint"
        )
