"""Studies: experiments defined as data (``recipes/studies/NAME.yaml``), expanded into runs.

A study names tasks, backbones (none: each task's recipe default), variants (a booster mode plus ``--set``
overrides) and a baseline variant. ``expand`` turns it into one planned run per task x backbone x variant x
seed; paired runs share the seed, hence the data order and the initial weights of every shared part, so the
booster is the only difference. ``run_study`` trains the planned runs that are not already completed in the
results (idempotent: a rerun skips them; an interrupted one is resumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import MedboostError
from .models.backbones import BACKBONE_DIMS
from .recipes import BoosterMode, Recipe, load_recipe, merge, read_yaml, recipes_dir
from .results import cell_id, load_results
from .tasks import resolve_task


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    booster: BoosterMode
    set: list[str] = Field(default_factory=list)


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    tables: list[int] = Field(default_factory=list, description="paper tables this study regenerates")
    tasks: list[str]
    backbones: list[str] | None = None
    baseline: str = "none"
    variants: dict[str, Variant]
    layers: list[int] | None = Field(None, description="adds an rllm variant per layer index: rllm-L{i}")
    compare: list[tuple[str, str]] = Field(default_factory=list, description="extra (a, b) pairs: a minus b")
    presets: dict[str, dict] = Field(default_factory=dict, description="overrides of this study under a preset")

    def all_variants(self) -> dict[str, Variant]:
        extra = {f"rllm-L{i}": Variant(booster="rllm", set=[f"booster.layer={i}"]) for i in self.layers or []}
        return {**self.variants, **extra}

    def comparisons(self) -> list[tuple[str, str]]:
        """(variant, reference) pairs: every variant against the baseline, then the study's own pairs."""
        pairs = [(v, self.baseline) for v in self.all_variants() if v != self.baseline]
        return pairs + [tuple(p) for p in self.compare if tuple(p) not in pairs]


def study_names() -> list[str]:
    return sorted(p.stem for p in (recipes_dir() / "studies").glob("*.yaml"))


def load_study(name: str, preset: str | None = None) -> Study:
    path = recipes_dir() / "studies" / f"{name}.yaml"
    if not path.exists():
        raise MedboostError(f"unknown study '{name}'; available: {', '.join(study_names())}")
    data = read_yaml(path)
    if preset and preset in (data.get("presets") or {}):
        data = merge(data, data["presets"][preset])
    try:
        study = Study.model_validate({"name": name, **data})
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise MedboostError(f"{path}: bad study key '{key}': {first.get('input')!r} ({first['msg']})") from None
    variants = study.all_variants()
    for a, b in [(study.baseline, study.baseline), *study.compare]:
        for v in (a, b):
            if v not in variants:
                raise MedboostError(f"{path}: '{v}' is not one of its variants ({', '.join(variants)})")
    return study


@dataclass(frozen=True)
class PlannedRun:
    study: str
    task: str
    backbone: str
    variant: str
    seed: int
    preset: str | None
    sets: tuple[str, ...]
    booster: str
    recipe: Recipe

    @property
    def run_id(self) -> str:
        return self.recipe.run_id()

    @property
    def cell(self) -> str:
        """The run id without its seed: the same for every seed of one table cell."""
        return cell_id(self.run_id)

    def command(self) -> str:
        parts = ["medboost train", self.task, f"--backbone {self.backbone}", f"--booster {self.booster}",
                 f"--seed {self.seed}"]
        parts += [f"--preset {self.preset}"] if self.preset else []
        parts += [f"--set {s}" for s in self.sets]
        return " ".join(parts)


def expand(study: Study, tasks: list[str] | None = None, seeds: int = 3, preset: str | None = None,
           extra_sets: list[str] | None = None) -> list[PlannedRun]:
    """One planned run per task x backbone x variant x seed (backbones that do not fit a task's
    dimensionality are skipped for it)."""
    chosen = tasks or study.tasks
    for t in chosen:
        resolve_task(t)
    runs = []
    for task_name in chosen:
        task = resolve_task(task_name)
        default = load_recipe(task.short, preset=preset).backbone.name
        backbones = [b for b in (study.backbones or [default]) if BACKBONE_DIMS.get(b) == task.dims]
        if not backbones:
            raise MedboostError(f"study '{study.name}' has no {task.dims}D backbone for task '{task.short}' "
                                f"(its backbones: {', '.join(study.backbones or [])}); choose its tasks: "
                                f"{', '.join(study.tasks)}")
        for backbone in backbones:
            for variant, spec in study.all_variants().items():
                sets = tuple(spec.set) + tuple(extra_sets or [])
                for seed in range(seeds):
                    flags = [("--backbone", "backbone.name", backbone), ("--booster", "booster.mode", spec.booster),
                             ("--seed", "seed", seed)]
                    recipe = load_recipe(task.short, preset=preset, flags=flags, sets=list(sets))
                    runs.append(PlannedRun(study.name, task.short, backbone, variant, seed, preset, sets,
                                           spec.booster, recipe))
    return runs


def completed_run_ids(results_dir: Path) -> set[str]:
    df = load_results(results_dir, columns=["run_id"], status="completed")
    return set(df["run_id"])


def run_study(runs: list[PlannedRun], data_dir: Path, results_dir: Path, train: Callable, log=print) -> dict[str, int]:
    """Train the runs not yet completed; returns counts of skipped and trained runs."""
    done = completed_run_ids(results_dir)
    todo = [r for r in runs if r.run_id not in done]
    log(f"{len(runs)} runs planned, {len(runs) - len(todo)} already completed, {len(todo)} to train")
    for i, run in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {run.command()}")
        interrupted = (Path(results_dir) / "checkpoints" / run.run_id / "last.pt").exists()
        train(run.recipe, data_dir, results_dir, resume=interrupted)
    return {"planned": len(runs), "skipped": len(runs) - len(todo), "trained": len(todo)}
