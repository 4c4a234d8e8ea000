"""The report's data: each study's planned runs matched with the completed rows, and its paired statistics.

A cell holds the completed runs of one configuration (all its seeds): planned runs and result rows meet on the
run id without its seed (results.cell_id), which carries the configuration's hash, so a cell can only contain
runs of exactly that configuration. A study is gathered once per configuration (preset) that has results, and once per set of recipe overrides that
its completed runs share (``ablate STUDY --epochs 1`` or ``--set``): a study run with overrides is a configuration
of that study, reported as such when it holds at least one variant and its reference (a pair to compare).
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MedboostError
from ..paper import TITLES
from ..recipes import BOOSTER_MODES, load_recipe, saved_recipe
from ..results import cell_id, load_results
from ..stats import PairedDiff, paired_bootstrap
from ..studies import PlannedRun, Study, expand, load_study, study_names

PRESETS = (None, "cpu")


@dataclass
class Cell:
    """The completed runs of one configuration (all seeds)."""

    runs: pd.DataFrame  # rows of the results

    @property
    def n(self) -> int:
        return len(self.runs)

    def values(self, metric: str) -> np.ndarray:
        return 100 * self.runs[f"test_{metric}"].to_numpy(dtype=float)

    def mean(self, metric: str) -> float | None:
        return float(self.values(metric).mean()) if self.n else None

    def std(self, metric: str) -> float:
        return float(self.values(metric).std(ddof=1)) if self.n > 1 else 0.0

    def text(self, metric: str, paper_value: float | None = None) -> str:
        return str(self.value(metric, paper_value))

    def value(self, metric: str, paper_value: float | None = None) -> "Value":
        if not self.n:
            return Value(None, 0.0, 0, paper_value)
        return Value(self.mean(metric), self.std(metric), self.n, paper_value)

    @property
    def run_ids(self) -> list[str]:
        return sorted(self.runs["run_id"]) if self.n else []


@dataclass
class Value:
    """One table cell: our mean and std over n seeds (percent; None: no run) beside the paper's value. Text shows
    "mean ± std (n)", "mean (n=1)" for one seed (a single run has no spread) and the paper's value in brackets,
    then "≠" and the letters of the protocol aspects where our cell differs from the paper's (``marks``,
    anchors.protocol); the LaTeX renderer puts the paper's value in a column of its own and bolds the best of a
    ``group``."""

    mean: float | None
    std: float
    n: int
    paper: float | None = None
    group: str | None = None  # cells compared with each other: the best of a group is bold in LaTeX and HTML
    marks: str = ""  # where our protocol differs from the paper's: "SPNV" (anchors.protocol.ASPECTS' letters)

    def ours(self) -> str:
        if self.mean is None:
            return "—"
        return f"{self.mean:.2f} (n=1)" if self.n == 1 else f"{self.mean:.2f} ± {self.std:.2f} ({self.n})"

    def __str__(self) -> str:
        return (self.ours() + (f" [{self.paper:.2f}]" if self.paper is not None else "")
                + (f" ≠{self.marks}" if self.marks else ""))


@dataclass
class Config:
    """One study under one configuration (preset), with its planned runs and the completed rows per cell."""

    study: Study
    preset: str | None
    plan: list[PlannedRun]
    cells: dict[tuple[str, str, str], Cell]  # (task, backbone, variant) -> Cell
    options: tuple[str, ...] = ()  # appended to every fill-in command: --results-dir/--data-dir as given to report
    overrides: tuple[str, ...] = ()  # recipe keys (key=value, as --set takes them) its runs share beyond the plan

    @property
    def label(self) -> str:
        base = f"--preset {self.preset}" if self.preset else "paper recipes"
        return " ".join([base] + [f"--set {s}" for s in self.overrides])

    @property
    def has_results(self) -> bool:
        return any(c.n for c in self.cells.values())

    def cell(self, task: str, backbone: str, variant: str) -> Cell:
        return self.cells.get((task, backbone, variant), Cell(pd.DataFrame(columns=["run_id"])))

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.plan))

    def backbones(self) -> list[str]:
        return list(dict.fromkeys(r.backbone for r in self.plan))

    def fill_command(self, tasks: list[str]) -> str:
        parts = [f"medboost ablate {self.study.name}"] + [f"--tasks {t}" for t in tasks]
        parts += ([f"--preset {self.preset}"] if self.preset else []) + [f"--set {s}" for s in self.overrides]
        return with_options(" ".join(parts), self.options)

    def run_command(self, run: PlannedRun) -> str:
        return with_options(run.command(), self.options)

    def backbone_title(self, backbone: str) -> str:
        """The backbone's display name, or, where this configuration resizes it (``--preset cpu`` sets dim and
        depth), its family with the size it has: "ViViT (dim 192, depth 4)", not the paper's "ViViT-M"."""
        return backbone_title(backbone, next((r.recipe.backbone for r in self.plan if r.backbone == backbone), None))

    def has_pair(self) -> bool:
        """Whether some variant and its reference both have runs on one task and backbone."""
        keys = {(t, b) for t, b, _ in self.cells}
        return any(self.cell(t, b, v).n and self.cell(t, b, r).n
                   for t, b in keys for v, r in self.study.comparisons())


def backbone_title(name: str, spec=None) -> str:
    """``name``'s display name (paper.TITLES); with a recipe's backbone section that sets its width or depth, the
    family's name (the title without its size suffix) and the size it is built with: its dim, depth and, for a
    ViViT, the temporal depth it keeps from its registered size (ViViT-S and ViViT-M differ there)."""
    title = TITLES.get(name, name)
    if spec is None or (getattr(spec, "dim", None) is None and getattr(spec, "depth", None) is None):
        return title
    registered = _registered_size(name)
    sizes = []
    for key, words in (("dim", "dim"), ("depth", "depth"), ("temporal_depth", "temporal depth")):
        value = getattr(spec, key, None)
        value = getattr(registered, key, None) if value is None else value
        sizes += [f"{words} {value}"] if value else []
    family = title.rsplit("-", 1)[0] if re.fullmatch(r".+-[A-Z]", title) else title
    return f"{family} ({', '.join(sizes)})"


def _registered_size(name: str):
    """The registered spec of backbone ``name`` (a 3D family's holds dim, depth, temporal_depth), or None."""
    from ..models.backbones import BACKBONES

    family = BACKBONES.get(name)
    return family.variants[name] if family is not None else None


def with_options(command: str, options: tuple[str, ...]) -> str:
    """``command`` with ``options`` (e.g. ``--results-dir``, a path) appended, quoted for a POSIX shell."""
    return " ".join([command, *map(shlex.quote, options)])


@dataclass
class Pair:
    """A variant against its reference on one task and backbone: paired differences of test ACC and AUC."""

    config: Config
    task: str
    backbone: str
    variant: str
    reference: str
    acc: PairedDiff
    auc: PairedDiff
    run_ids: list[str]


def gather(results_dir: Path, seeds: int = 3, options: tuple[str, ...] = (), warn=None) -> tuple[list[Config], pd.DataFrame]:
    """Every study under each configuration that has results (or, without any, the paper recipes), and the rows
    (files that are not sound rows are skipped and named through ``warn``: results.load_results); ``options`` end
    every fill-in command."""
    df = load_results(results_dir, status="completed", warn=warn)
    if not df.empty:
        df = df.assign(cell=df["run_id"].map(cell_id))
    configs = []
    studies = {(name, preset): load_study(name, preset) for name in study_names() for preset in PRESETS}
    plans = {key: expand(study, seeds=seeds, preset=key[1]) for key, study in studies.items()}
    own = {run.cell for plan in plans.values() for run in plan}  # every cell a study plans on its own tasks
    for name in study_names():
        found = []
        for preset in PRESETS:
            study = studies[(name, preset)]
            plan = plans[(name, preset)] + extra_tasks(study, preset, seeds, df, own)
            cells = {}
            for run in plan:
                if run.seed == 0:
                    rows = df[df["cell"] == run.cell] if not df.empty else df
                    cells[(run.task, run.backbone, run.variant)] = Cell(rows)
            found.append(Config(study, preset, plan, cells, tuple(options)))
        with_results = [c for c in found if c.has_results]
        configs += with_results or found[:1]
    return configs + override_configs(configs, df, seeds, tuple(options)), df


def extra_tasks(study: Study, preset: str | None, seeds: int, df: pd.DataFrame, own: set[str]) -> list[PlannedRun]:
    """The study's planned runs on each task outside its own list where it was run (``ablate control --tasks
    pneumonia``), so that its table and verdict include that task like one of its own. A task joins when completed
    rows meet a cell of one of the study's variants (not its baseline) that no study plans on its own tasks
    (``own``): rows shared with another study's plan (main2d's baseline and R-LLM cells) do not make the layer
    study, say, a study of every task main2d ran."""
    if df.empty:
        return []
    done, extra = set(df["cell"]), []
    for task in sorted(set(df["task"].dropna()) - set(study.tasks)):
        try:
            runs = expand(study, tasks=[task], seeds=seeds, preset=preset)
        except MedboostError:  # no backbone of the study for this task, or a task (a cohort) it cannot plan
            continue
        if any(r.cell in done and r.cell not in own for r in runs if r.variant != study.baseline):
            extra += runs
    return extra


def override_configs(configs: list[Config], df: pd.DataFrame, seeds: int, options: tuple[str, ...]) -> list[Config]:
    """The studies run with recipe overrides (``ablate STUDY --epochs 1``, ``--set``): for each completed run that
    fits no planned cell, the keys where it differs from a planned run of the same task, backbone and booster are
    a candidate set of overrides; the study expanded with them (``expand(..., extra_sets=)``) is a configuration
    when its run ids meet completed runs of at least one variant and its reference. The fewest overrides win: runs
    that ``--preset cpu --set train.epochs=1`` explains are not shown again as the paper's recipes with the keys
    of the CPU preset set one by one."""
    if df.empty:
        return []
    planned = {run.cell for c in configs for run in c.plan}
    rest = df[~df["cell"].isin(planned)].drop_duplicates("cell")
    if rest.empty:
        return []
    candidates: dict[tuple, None] = {}
    plans: dict[tuple, list] = {}  # (task, backbone, booster) -> [(planned run, its flat recipe)]
    for run in _seed0_plans():
        plans.setdefault((run.task, run.backbone, run.booster), []).append(run)
    flat: dict[str, dict] = {}
    for _, row in rest.iterrows():
        if not isinstance(row["config_json"], str):
            continue
        ran = _recipe_keys(row["config_json"])
        for run in plans.get((row["task"], row["backbone"], row["booster"]), []):
            base = flat.setdefault(run.run_id, _flat(run.recipe.model_dump(mode="json")))
            diffs = tuple(_differences(ran, base))
            if diffs:
                candidates[(run.study, run.preset, diffs)] = None
    found, claimed = [], set()
    for name, preset, diffs in sorted(candidates, key=lambda c: len(c[2])):  # the fewest overrides first
        study = load_study(name, preset)
        try:
            plan = expand(study, seeds=seeds, preset=preset, extra_sets=list(diffs))
        except MedboostError:  # an override this study's variants reject
            continue
        firsts = [r for r in plan if r.seed == 0]
        if len({r.cell for r in firsts}) < len(firsts):  # overrides that make two variants one (a key they set)
            continue
        cells = {(r.task, r.backbone, r.variant): Cell(df[df["cell"] == r.cell]) for r in firsts}
        config = Config(study, preset, plan, cells, options, diffs)
        new = {(name, r.cell) for r in firsts if config.cells[(r.task, r.backbone, r.variant)].n} - claimed
        if new and config.has_pair():  # runs a configuration with fewer overrides has not shown yet
            found.append(config)
            claimed |= new
    return found


def outside_cells(configs: list[Config], df: pd.DataFrame) -> list[tuple[str, Cell]]:
    """Completed runs that fit no planned cell of any study (made with ``--epochs``, ``--set`` and such), grouped
    by configuration (the run id without its seed), each labelled by what sets it apart (``config_differences``)."""
    planned = {run.cell for c in configs for run in c.plan}
    if df.empty:
        return []
    rest = df[~df["cell"].isin(planned)]
    if rest.empty:
        return []
    nearby = _seed0_plans()
    return [(config_differences(rows.iloc[0], nearby), Cell(rows)) for _, rows in rest.groupby("cell", sort=True)]


def _seed0_plans() -> list[PlannedRun]:
    """One planned run per cell of every study under every preset: what an outside run is compared with."""
    return [run for name in study_names() for preset in PRESETS
            for run in expand(load_study(name, preset), seeds=1, preset=preset)]


def config_differences(row: pd.Series, plans: list[PlannedRun] = ()) -> str:
    """What sets a run apart, said as briefly as possible: the nearest of its task's recipe (with the run's backbone
    and booster, under each preset) and the planned runs of the same task, backbone and booster (``plans``,
    named "study variant"), then ``key=value`` for every recipe key where the run differs from it. The task's
    recipe wins ties; a preset is named when it is not the paper's recipes."""
    if not isinstance(row["config_json"], str):
        return "a recipe its row does not record"
    ran = _recipe_keys(row["config_json"])
    arm = ("--booster", "booster.mode", row["booster"]) if row["booster"] in BOOSTER_MODES else \
        ("--model", "model", row["booster"])  # not a booster mode: a model family's name (pneumollm)
    flags = [("--backbone", "backbone.name", row["backbone"]), arm]
    candidates = []
    for preset in PRESETS:
        try:
            base = _flat(load_recipe(ran["task"], preset=preset, flags=flags).model_dump(mode="json"))
        except MedboostError:  # e.g. a backbone that preset does not have
            continue
        candidates.append((_differences(ran, base), 0, [f"--preset {preset}"] if preset else []))
    for run in plans:
        if (run.task, run.backbone, run.booster) == (row["task"], row["backbone"], row["booster"]):
            base = _flat(run.recipe.model_dump(mode="json"))
            named = [f"{run.study} {run.variant}"] + ([f"--preset {run.preset}"] if run.preset else [])
            candidates.append((_differences(ran, base), 1, named))
    if not candidates:
        return "a recipe medboost no longer has"
    diffs, _, named = min(candidates, key=lambda c: (len(c[0]), c[1]))
    return ", ".join(named + diffs)


def _recipe_keys(config_json: str) -> dict:
    """A results row's recipe as flat keys, with the values of keys added since it was saved (saved_recipe)."""
    try:
        data = saved_recipe(config_json).model_dump(mode="json")
    except (MedboostError, ValueError):  # a recipe today's schema rejects: compare what it says
        data = json.loads(config_json)
    return _flat(data)


IGNORED_KEYS = {"seed", "train.device", "train.threads"}  # not what a run is: its seed, where it ran (config_hash)


def _differences(ran: dict, base: dict) -> list[str]:
    """``key=value`` (as --set takes it) for each key but the seed where ``ran`` differs from ``base``."""
    keys = sorted((set(ran) | set(base)) - IGNORED_KEYS)
    return [f"{k}={_set_value(ran.get(k))}" for k in keys if ran.get(k) != base.get(k)]


def _set_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def selection_metrics(df: pd.DataFrame) -> dict[str | None, int]:
    """How many runs chose their epoch on each validation metric (train.select_metric; None: not recorded)."""
    column = df["select_metric"] if "select_metric" in df else pd.Series([None] * len(df), dtype=object)
    return dict(Counter(None if pd.isna(m) else str(m) for m in column).most_common())


def paired_stats(config: Config, n_boot: int, seen: set | None = None) -> list[Pair]:
    """Paired differences for the study's comparisons; ``seen`` skips pairs of runs already done elsewhere
    (studies share runs: ViViT-M with and without R-LLM is in Tables 3, 5 and 6)."""
    seen = set() if seen is None else seen
    pairs = []
    keys = list(dict.fromkeys((t, b) for t, b, _ in config.cells))
    for task, backbone in keys:
        task_type = None
        for variant, reference in config.study.comparisons():
            a, b = config.cell(task, backbone, variant), config.cell(task, backbone, reference)
            if not (a.n and b.n):
                continue
            seeds = sorted(set(a.runs["seed"]) & set(b.runs["seed"]))
            if not seeds:
                continue
            ra = a.runs.set_index("seed").loc[seeds]
            rb = b.runs.set_index("seed").loc[seeds]
            key = (tuple(sorted(ra["run_id"])), tuple(sorted(rb["run_id"])))
            if key in seen:
                continue
            seen.add(key)
            labels = np.array(ra["test_labels"].iloc[0].tolist())
            base = [np.array(s.tolist()) for s in rb["test_scores"]]
            boost = [np.array(s.tolist()) for s in ra["test_scores"]]
            task_type = task_type or _task_type(task)
            acc = paired_bootstrap(labels, base, boost, task_type, "acc", n_boot=n_boot)
            auc = paired_bootstrap(labels, base, boost, task_type, "auc", n_boot=n_boot)
            pairs.append(Pair(config, task, backbone, variant, reference, acc, auc,
                              sorted(ra["run_id"]) + sorted(rb["run_id"])))
    return pairs


def _task_type(task: str) -> str:
    from ..tasks import resolve_task

    return resolve_task(task).task_type
