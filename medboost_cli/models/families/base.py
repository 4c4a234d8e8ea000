"""What a model family is: the typed entry each family's module registers (``ModelFamily``), with how
`medboost bench` compares its runs (``BenchSpec``).

A family's builder is the one place that reads a recipe to build a model: it turns the recipe's sections into the
keyword arguments and small dataclasses that the modules under ``models/`` take. The recipe is passed in, never
imported (the recipe schema derives its ``model:`` choices and sections from this registry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from pydantic import BaseModel

from ...hardware import auto_is_bf16

if TYPE_CHECKING:
    from ...recipes import BackboneConfig, Recipe
    from ...tasks import Task
    from ..built import BuiltModel

# The frozen LM path of a built model as `medboost bench` times it: (module, tokens it sees, their width).
FrozenPath = tuple[torch.nn.Module, int, int]


@dataclass(frozen=True)
class BenchSpec:
    """How `medboost bench` compares runs of one family: by booster mode (``variants`` None) or by named variants,
    each a set of keys of the family's own recipe section."""

    option: str  # the bench option that names the cases: --booster or --variant
    column: str  # what a case is called in the table's first column and in messages: booster, variant
    frozen: str  # the frozen LM path's name in the table: F_L, LM stack
    default: tuple[str, ...]  # the cases compared when none are given
    variants: dict[str, dict[str, Any]] | None = None  # variant -> keys of the family's section over the recipe's
    caption: str = ""  # after the table's title, e.g. " (PneumoLLM)"


@dataclass(frozen=True)
class ModelFamily:
    """One ``model:`` family. The default family is what a recipe without ``model:`` builds: its runs hash without
    the ``model`` key (they predate it), and it adds no defaults file. Every other family layers
    ``recipes/models/NAME.yaml`` over the base recipe and each preset's ``NAME-2d`` section over the preset's own."""

    name: str  # the value of ``model:`` and of --model
    title: str  # its name in messages and tables: R-LLM, PneumoLLM
    build: Callable[[Recipe, Task, torch.device], BuiltModel]  # the recipe -> model arguments -> the model
    dims: tuple[int, ...]  # the task dimensionalities it takes
    bench: BenchSpec
    frozen_path: Callable[[BuiltModel], FrozenPath | None]  # what `medboost bench` times as the frozen LM path
    names_lm: Callable[[Recipe], bool]  # whether a run records ``booster.llm`` as its LM (``Recipe.lm_source``)
    loads_lm: Callable[[Recipe], bool]  # whether a run reads LM weights
    section: type[BaseModel] | None = None  # its own recipe section, under its name (``pneumollm.*``)
    booster_keys: tuple[str, ...] | None = None  # the booster.* keys it reads (None: all); only these are hashed
    boosted: bool = False  # a run's arm is a booster mode (--booster MODE), not the family itself
    default: bool = False
    gradcam: bool = False  # `medboost gradcam` pairs its runs (a baseline and its booster run)

    def arm(self, recipe: Recipe) -> str:
        """The run id's and the results row's ``booster`` field: the booster mode, or the family's name."""
        return recipe.booster.mode if self.boosted else self.name

    def arm_flags(self, booster: str | None) -> list[tuple[str, str, str]]:
        """The command-line options that make one arm of a study, as (option, recipe key, value): --model NAME
        unless this is the default family, --booster MODE where its arm is a booster mode."""
        flags = [] if self.default else [("--model", "model", self.name)]
        return flags + ([("--booster", "booster.mode", booster)] if self.boosted else [])

    def dims_error(self, dims: int, task: str) -> str | None:
        """Why this family cannot take a ``dims``-D task, or None."""
        if dims in self.dims:
            return None
        return f"model={self.name} takes {' or '.join(f'{d}D' for d in self.dims)} images; {task} is {dims}D"


def backbone_config(recipe: Recipe, task: Task) -> BackboneConfig:
    """``recipe.backbone`` as the backbone is built: 3D backbones take the volume at its own size."""
    if task.dims == 3 and recipe.backbone.img_size is None:
        return recipe.backbone.model_copy(update={"img_size": recipe.data.size})
    return recipe.backbone


def llm_dtype(recipe: Recipe, device: torch.device) -> torch.dtype:
    """A frozen LM is stored in bf16 where the device runs bf16 natively; a trained one always in fp32."""
    if not recipe.booster.freeze:
        return torch.float32
    choice = recipe.booster.dtype
    if choice == "bf16" or (choice == "auto" and auto_is_bf16(device)):
        return torch.bfloat16
    return torch.float32
