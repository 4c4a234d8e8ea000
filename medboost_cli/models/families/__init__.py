"""Model families (the recipe's ``model:``), one module each, registered here: ``rllm`` (a backbone with the booster,
the default) and ``pneumollm``. The recipe schema takes its ``model:`` choices and its family sections from
``FAMILIES``; `medboost train --model`, studies, bench, Grad-CAM and the run id ask the entry, never the name.

Adding a family NAME: its nn.Modules under ``models/`` (keyword arguments or a small dataclass of their own, no
recipe import); a module here with its recipe section (a pydantic model, or none), its builder (recipe -> those
arguments -> ``BuiltModel``, each part seeded from medboost_cli.seeding inside ``torch.random.fork_rng``) and its
``ModelFamily`` entry; one line in ``FAMILIES`` below; its defaults in ``recipes/models/NAME.yaml`` and a
``NAME-2d`` (or ``NAME-3d``) section in each preset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...errors import ConfigError
from ..built import BuiltModel
from ..backbones import check_backbone
from .base import BenchSpec, ModelFamily, backbone_config, llm_dtype
from .pneumollm import PNEUMOLLM, PneumoLLMConfig
from .rllm import RLLM

if TYPE_CHECKING:
    from ...recipes import Recipe
    from ...tasks import Task

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "BenchSpec", "ModelFamily", "PneumoLLMConfig", "build_model", "check_model", "llm_dtype",
           "model_family"]

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (RLLM, PNEUMOLLM)}
DEFAULT_FAMILY: str = next(name for name, family in FAMILIES.items() if family.default)  # a recipe without model:


def model_family(name: Any, where: str = "model") -> ModelFamily:
    """The registered family ``name``; anything else is one ConfigError line, from ``where``, listing them."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ConfigError(f"{where}: bad value for 'model': {name!r} is not a registered model family; choose one of "
                          f"{', '.join(FAMILIES)}")
    return FAMILIES[name]


def _family_for(recipe: Recipe, task: Task) -> ModelFamily:
    """``recipe``'s family, once it has checked that it takes ``task``'s dimensionality."""
    family = model_family(recipe.model)
    problem = family.dims_error(task.dims, task.short)
    if problem:
        raise ConfigError(problem)
    return family


def check_model(recipe: Recipe, task: Task) -> None:
    """What building ``recipe``'s model would refuse, checked before any data is read: the family's
    dimensionality and the backbone family's checks of the backbone.* keys."""
    _family_for(recipe, task)
    check_backbone(backbone_config(recipe, task), task.dims)


def build_model(recipe: Recipe, task: Task, device: torch.device | str = "cpu") -> BuiltModel:
    """Build ``recipe``'s model for ``task`` with its family's builder: seeds make paired runs share every common
    part (medboost_cli.seeding), and building leaves the global RNG as it found it."""
    return _family_for(recipe, task).build(recipe, task, torch.device(device))
