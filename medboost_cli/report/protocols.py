"""The protocol of each of our cells (``anchors.Protocol``), read from its recipe and its rows, and the marks where
it differs from an anchor's: the paper's beside our cells in the main tables, the field's in the anchors tables.

Our cells: the data file's size (``data.size``), the side the backbone takes (``backbone.img_size``, else the
backbone's own; 3D backbones follow the data), how the image reaches it (``data.resize`` as the row's recipe
records it; "upsample" where it records none), pretrained or not (``backbone.pretrained``), the seeds behind the
cell (n), and the selection rule: the validation split, on its loss where ``train.select_metric`` is loss.
"""

from __future__ import annotations

import json

from ..anchors import Protocol, anchor_source, marks
from .gather import Cell, Config

DEFAULT_RESIZE = "upsample"  # what a row whose recipe has no data.resize did


def input_side(recipe) -> int:
    """The side of the input the recipe's backbone takes, as it is built; the data's side where it has none."""
    from ..models.backbones import BACKBONES
    from ..models.families.base import backbone_config

    cfg = backbone_config(recipe, recipe.task_info)
    if cfg.img_size:
        return int(cfg.img_size)
    family = BACKBONES.get(cfg.name)
    spec = family.variants[cfg.name] if family is not None else None
    side = getattr(spec, "img_size", None)
    if side is None and family is not None and family.check is not None:
        side = family.check(spec, cfg)  # a ResNet's check returns its input side (stem-dependent)
    return int(side) if isinstance(side, int) else int(recipe.data.size)


def recorded_resize(cell: Cell, recipe) -> str:
    """``data.resize`` as the cell's first row records it, else the recipe's, else DEFAULT_RESIZE."""
    if cell.n and "config_json" in cell.runs and isinstance(cell.runs["config_json"].iloc[0], str):
        try:
            value = json.loads(cell.runs["config_json"].iloc[0]).get("data", {}).get("resize")
        except (ValueError, AttributeError):
            value = None
        if value:
            return str(value)
    return str(getattr(recipe.data, "resize", None) or DEFAULT_RESIZE)


def our_protocol(recipe, cell: Cell) -> Protocol:
    """The protocol of our cell of runs of ``recipe`` (its seeds: the cell's runs; None where it has none)."""
    size, side = int(recipe.data.size), input_side(recipe)
    return Protocol(size=size, input=side, resize=recorded_resize(cell, recipe) if side != size else None,
                    pretrained=bool(recipe.backbone.pretrained), seeds=cell.n or None,
                    selection="val loss" if recipe.train.select_metric == "loss" else "val")


def planned_recipe(config: Config, task: str, backbone: str, variant: str):
    """The recipe of the configuration's cell (task, backbone, variant), or None where it plans none."""
    return next((r.recipe for r in config.plan if (r.task, r.backbone, r.variant) == (task, backbone, variant)), None)


def paper_marks(config: Config, task: str, backbone: str, variant: str, cell: Cell) -> str:
    """The letters of the aspects where our cell's protocol differs from the paper's (empty without runs)."""
    recipe = planned_recipe(config, task, backbone, variant)
    if recipe is None or not cell.n:
        return ""
    return marks(our_protocol(recipe, cell), anchor_source("paper").protocol(recipe.task_info.dims))
