"""Studies: experiments defined as data (``recipes/studies/NAME.yaml``), expanded into runs.

A study names tasks, backbones (none: each task's recipe default), variants (a booster mode plus ``--set``
overrides) and a baseline variant. ``expand`` turns it into one planned run per task x backbone x variant x
seed; paired runs share the seed, hence the data order and the initial weights of every shared part, so the
booster is the only difference. ``run_study`` trains the planned runs that are not already completed in the
results (idempotent: a rerun skips them; an interrupted one is resumed) nor being trained by another process
(``pending``; the launchers train them in parallel or on a cluster).

A study also declares what the report shows (``tables:``, one ``TableSpec`` each): a kind (main, prior,
ablation, layers: one renderer each in medboost_cli.report.tables), a caption, the variants and metrics shown,
and the paper's numbers its cells are compared with (``paper``: task -> variant -> metric -> value, or
``paper_by_backbone`` for values that differ per backbone). Each variant carries its ``label`` for tables;
``layers: [i, ...]`` adds one R-LLM variant per layer index of the LM, with the index as data (``Variant.layer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError, short, short_text
from .locks import Holder, live_holder
from .models.backbones import BACKBONE_DIMS
from .models.families import DEFAULT_FAMILY, FAMILIES, model_family
from .recipes import BoosterMode, ModelFamilyName, Recipe, load_recipe, merge, read_yaml, recipes_dir
from .results import ResultsDir, cell_id, load_results
from .tasks import resolve_task


Metric = Literal["acc", "auc", "params"]  # test ACC and AUC in percent; params: total parameters in millions
Values = dict[str, dict[str, dict[Metric, float | None]]]  # task -> variant -> metric -> the paper's number


class Variant(BaseModel):
    """One arm of a study: a booster mode (or another model family) plus ``--set`` overrides, and how tables name it."""

    model_config = ConfigDict(extra="forbid")
    booster: BoosterMode | None = Field(None, description="the booster mode (R-LLM runs); required unless model is set")
    model: ModelFamilyName = Field(DEFAULT_FAMILY, description="another model family, e.g. pneumollm: a PneumoLLM "
                                   "run (its switches in `set`)")
    set: list[str] = Field(default_factory=list)
    label: str | None = Field(None, description="name in tables, after the backbone's ('ViViT-M + R-LLM'); "
                                                "'' for the bare backbone; default: the variant's key")
    layer: int | None = Field(None, description="LM layer index: sets booster.layer (variants made from `layers:`)")

    @model_validator(mode="after")
    def _has_an_arm(self) -> Variant:
        if (self.booster is None) == model_family(self.model).boosted:
            boosted = [f for f in FAMILIES.values() if f.boosted]
            others = [f for f in FAMILIES.values() if not f.boosted]
            raise ValueError(f"give an {' / '.join(f.title for f in boosted)} variant its booster mode, a "
                             f"{' / '.join(f.title for f in others)} variant (model: "
                             f"{' / '.join(f.name for f in others)}) none")
        return self

    def sets(self) -> tuple[str, ...]:
        return tuple(self.set) + ((f"booster.layer={self.layer}",) if self.layer is not None else ())

    def flags(self) -> list[tuple[str, str, str]]:
        """The CLI flags that make this arm, as (option, recipe key, value)."""
        return model_family(self.model).arm_flags(self.booster)


class TableSpec(BaseModel):
    """A table the report renders from a study's runs; ``kind`` picks its renderer (medboost_cli.report.tables)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["main", "prior", "ablation", "layers"]
    caption: str = Field(description="the table's title; {backbones} stands for the backbones' names")
    paper_table: int | None = Field(None, description="the paper's table it regenerates: 'Table N: ' and report order")
    key: str | None = Field(None, description="name in cells.csv; default: tableN, else the study's name")
    variants: list[str] | None = Field(None, description="the variants shown, in order; default: all")
    metrics: list[Metric] = Field(["acc", "auc"], description="the metrics shown, in order")
    paper: Values = Field(default_factory=dict, description="the paper's numbers for every backbone")
    paper_by_backbone: dict[str, Values] = Field(default_factory=dict,
                                                 description="backbone -> its own numbers (instead of paper)")
    prior: dict[str, list[float | None]] = Field(default_factory=dict,
                                                 description="kind prior: method -> the paper's value per task")
    source: str | None = Field(None, description="kind prior: where the prior methods' values come from")

    def paper_value(self, task: str, variant: str, metric: str, backbone: str | None = None) -> float | None:
        """The paper's number for one cell, or None where it has none."""
        values = self.paper_by_backbone.get(backbone, self.paper)
        return values.get(task, {}).get(variant, {}).get(metric)


class Study(BaseModel):
    """Tasks x backbones x variants, the baseline and comparisons, and the tables the report shows."""

    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    tables: list[TableSpec] = Field(default_factory=list, description="what the report renders from its runs")
    tasks: list[str]
    backbones: list[str] | None = None
    baseline: str = "none"
    variants: dict[str, Variant]
    layers: list[int] | None = Field(None, description="adds an rllm variant per LM layer index i: "
                                                   "key rllm-L{i}, label 'layer {i}', layer i")
    compare: list[tuple[str, str]] = Field(default_factory=list, description="extra (a, b) pairs: a minus b")
    presets: dict[str, dict] = Field(default_factory=dict, description="overrides of this study under a preset")

    def all_variants(self) -> dict[str, Variant]:
        extra = {f"rllm-L{i}": Variant(booster="rllm", layer=i, label=f"layer {i}") for i in self.layers or []}
        return {**self.variants, **extra}

    def label(self, variant: str) -> str:
        spec = self.all_variants()[variant]
        return variant if spec.label is None else spec.label

    def table_variants(self, table: TableSpec) -> list[str]:
        return table.variants or list(self.all_variants())

    def table_key(self, table: TableSpec) -> str:
        return table.key or (f"table{table.paper_table}" if table.paper_table else self.name)

    def comparisons(self) -> list[tuple[str, str]]:
        """(variant, reference) pairs: every variant against the baseline, then the study's own pairs."""
        pairs = [(v, self.baseline) for v in self.all_variants() if v != self.baseline]
        return pairs + [tuple(p) for p in self.compare if tuple(p) not in pairs]


def study_names() -> list[str]:
    return sorted(p.stem for p in (recipes_dir() / "studies").glob("*.yaml"))


def load_study(name: str, preset: str | None = None) -> Study:
    path = recipes_dir() / "studies" / f"{name}.yaml"
    if name not in study_names():
        raise ConfigError(f"unknown study '{name}'; available: {', '.join(study_names())}")
    data = read_yaml(path, kind="study")
    if preset and isinstance(data.get("presets"), dict) and isinstance(data["presets"].get(preset), dict):
        data = merge(data, data["presets"][preset])
    try:
        study = Study.model_validate({"name": name, **data})
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: bad study key '{key}': {short(first.get('input'))} ({short_text(first['msg'])})") from None
    problem = next(_problems(study), None)
    if problem:
        raise ConfigError(f"{path}: bad study key {problem}")
    return study


def _unknown(key: str, value, what: str, choices) -> str:
    return f"'{key}': {value!r} is not one of its {what} ({', '.join(map(str, choices))})"


def _problems(study: Study) -> Iterator[str]:
    """Keys whose values name something the study does not have, or that its table kinds cannot show."""
    variants = list(study.all_variants())
    named = [("baseline", study.baseline)] + [(f"compare.{i}", v) for i, pair in enumerate(study.compare) for v in pair]
    for task in study.tasks:
        try:
            resolve_task(task)
        except ConfigError as e:
            yield f"'tasks': {e}"
    keys = [study.table_key(t) for t in study.tables]
    for i, table in enumerate(study.tables):
        at = f"tables.{i}"
        if keys.count(keys[i]) > 1:
            yield f"'{at}.key': {keys[i]!r} names two of its tables; give each its own key"
        if table.kind == "main" and len(study.table_variants(table)) != 2:
            yield f"'{at}.variants': a main table shows two variants (baseline, booster), not {study.table_variants(table)}"
        if table.kind in ("prior", "layers") and len(table.metrics) != 1:
            yield f"'{at}.metrics': a {table.kind} table shows one metric, not {table.metrics}"
        named += [(f"{at}.variants", v) for v in table.variants or []]
        for backbone in table.paper_by_backbone:
            if backbone not in BACKBONE_DIMS:
                yield _unknown(f"{at}.paper_by_backbone", backbone, "backbones", sorted(BACKBONE_DIMS))
        blocks = [(f"{at}.paper", table.paper)] + [(f"{at}.paper_by_backbone.{b}", v)
                                                    for b, v in table.paper_by_backbone.items()]
        for where, values in blocks:
            for task, row in values.items():
                if task not in study.tasks:
                    yield _unknown(where, task, "tasks", study.tasks)
                named += [(f"{where}.{task}", v) for v in row]
        for method, row in table.prior.items():
            if len(row) != len(study.tasks):
                yield f"'{at}.prior.{method}': {len(row)} values for its {len(study.tasks)} tasks"
        try:
            table.caption.format(backbones="")
        except (KeyError, IndexError, ValueError):
            yield f"'{at}.caption': {table.caption!r} (the only placeholder is {{backbones}})"
    for key, variant in named:
        if variant not in variants:
            yield _unknown(key, variant, "variants", variants)


@dataclass(frozen=True)
class PlannedRun:
    study: str
    task: str
    backbone: str
    variant: str
    seed: int
    preset: str | None
    sets: tuple[str, ...]
    booster: str  # the run's arm: the booster mode, or the model family ("pneumollm")
    recipe: Recipe

    @property
    def run_id(self) -> str:
        return self.recipe.run_id()

    @property
    def cell(self) -> str:
        """The run id without its seed: the same for every seed of one table cell."""
        return cell_id(self.run_id)

    def command(self) -> str:
        arm = " ".join(f"{option} {value}" for option, _, value in self.recipe.family.arm_flags(self.booster))
        parts = ["medboost train", self.task, f"--backbone {self.backbone}", arm, f"--seed {self.seed}"]
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
            raise ConfigError(f"study '{study.name}' has no {task.dims}D backbone for task '{task.short}' "
                                f"(its backbones: {', '.join(study.backbones or [])}); choose its tasks: "
                                f"{', '.join(study.tasks)}")
        for backbone in backbones:
            for variant, spec in study.all_variants().items():
                sets = spec.sets() + tuple(extra_sets or [])
                for seed in range(seeds):
                    flags = [("--backbone", "backbone.name", backbone), *spec.flags(), ("--seed", "seed", seed)]
                    try:
                        recipe = load_recipe(task.short, preset=preset, flags=flags, sets=list(sets))
                    except ConfigError as e:
                        raise ConfigError(f"study '{study.name}', variant '{variant}' on {task.short}: {e}") from None
                    runs.append(PlannedRun(study.name, task.short, backbone, variant, seed, preset, sets,
                                           recipe.arm, recipe))
    return runs


def completed_run_ids(results_dir: Path) -> set[str]:
    df = load_results(results_dir, columns=["run_id"], status="completed")
    return set(df["run_id"])


@dataclass(frozen=True)
class Pending:
    """A plan against a results folder: the runs to train, those completed, those another process trains."""

    todo: list[PlannedRun]
    done: list[PlannedRun]
    busy: dict[str, Holder]  # run id -> the live holder of its lock


def pending(runs: list[PlannedRun], results_dir: Path) -> Pending:
    done = completed_run_ids(results_dir)
    rest = [r for r in runs if r.run_id not in done]
    busy = {r.run_id: h for r in rest if (h := live_holder(results_dir, r.run_id)) is not None}
    return Pending([r for r in rest if r.run_id not in busy], [r for r in runs if r.run_id in done], busy)


def run_study(runs: list[PlannedRun], data_dir: Path, results_dir: Path, train: Callable, log=print) -> dict[str, int]:
    """Train the runs not yet completed nor being trained by another process; returns the counts."""
    plan = pending(runs, results_dir)
    todo = plan.todo
    busy = f", {len(plan.busy)} being trained by other processes" if plan.busy else ""
    log(f"{len(runs)} runs planned, {len(plan.done)} already completed{busy}, {len(todo)} to train")
    for i, run in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {run.command()}")
        interrupted = ResultsDir(results_dir).last(run.run_id).exists()
        train(run.recipe, data_dir, results_dir, resume=interrupted)
    return {"planned": len(runs), "skipped": len(plan.done), "busy": len(plan.busy), "trained": len(todo)}
