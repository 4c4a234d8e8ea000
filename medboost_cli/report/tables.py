"""The report's tables, built from what each study declares (recipes/studies/*.yaml, ``tables:``).

One renderer per table kind: ``main`` (Tables 1 and 3: per task, ACC and AUC of a baseline and its booster),
``prior`` (Tables 2 and 4: one metric beside the paper's prior-method rows), ``ablation`` (Tables 5 and 6 and
the control study: a row per task x variant) and ``layers`` (one metric per LM layer index). A table is a
header, rows of text and notes; each number it shows keeps a trace (its runs) for cells.csv and pairs.csv.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from ..anchors import LEGEND
from ..paper import TITLES
from ..stats import PairedDiff, describe
from ..studies import TableSpec
from .gather import Cell, Config, Pair, Value
from .protocols import paper_marks

# The comparison the summary sentences are about: the R-LLM booster against the bare backbone.
HEADLINE = ("rllm", "none")
HEADERS = {"acc": "ACC", "auc": "AUC", "params": "Params (M)"}
STATS_METHOD = ("for each pair of runs with the same seed, the difference in test ACC/AUC; the point estimate is the "
                "mean over seeds; the interval resamples seeds and test samples (the same samples for both arms) "
                "{n_boot} times and takes the 2.5th and 97.5th percentiles (medboost_cli.stats).")


@dataclass
class Table:
    """A header, rows (text, or ``Value`` for our numbers beside the paper's), notes; ``fill`` is the command that
    fills it (a study's table), ``name`` a file name for it (its key, with its configuration)."""

    key: str
    title: str
    header: list[str]
    rows: list[list[str | Value]]
    notes: list[str] = field(default_factory=list)
    traces: list[dict] = field(default_factory=list)  # one per number: table, row, column, metric, run ids
    fill: str | None = None
    name: str = ""

    @property
    def has_data(self) -> bool:
        """Whether any of its numbers comes from a run (a table of "—" cells has none)."""
        return bool(self.traces)


def best_values(table: Table) -> set[int]:
    """The ids of the cells that hold the best (highest) mean of their group, where a group compares two or more
    means (a parameter count has no group: fewer is not better)."""
    groups: dict[str, list[Value]] = {}
    for row in table.rows:
        for c in row:
            if isinstance(c, Value) and c.group is not None and c.mean is not None:
                groups.setdefault(c.group, []).append(c)
    best = set()
    for values in groups.values():
        if len(values) > 1:
            top = max(v.mean for v in values)
            best |= {id(v) for v in values if v.mean == top}
    return best


def _title(name: str) -> str:
    return TITLES.get(name, name)


def _start(config: Config, spec: TableSpec, header: list[str]) -> Table:
    names = "/".join(config.backbone_title(b) for b in config.backbones())
    number = f"Table {spec.paper_table}: " if spec.paper_table else ""
    title = f"{number}{spec.caption.format(backbones=names)} ({config.label})"
    key = config.study.table_key(spec)
    name = "-".join([key] + ([config.preset] if config.preset else []) + list(config.overrides))
    return Table(key, title, header, [], fill=config.fill_command([]), name=re.sub(r"[^A-Za-z0-9_-]+", "-", name))


def _trace(table: Table, row: str, column: str, metric: str, cell: Cell) -> None:
    if cell.n:
        table.traces.append({"table": table.key, "row": row, "column": column, "metric": metric,
                             "mean": round(cell.mean(metric), 4), "std": round(cell.std(metric), 4), "n": cell.n,
                             "run_ids": ";".join(cell.run_ids)})


def _mark(value: Value, config: Config, task: str, backbone: str, variant: str, cell: Cell) -> Value:
    """``value`` with the marks of where its cell's protocol differs from the paper's (where it has a paper value).
    Only the main tables (the paper's Tables 1 and 3, Lai et al.) are marked: an ablation table's paper values may
    come from another paper (PneumoLLM's), whose protocol the anchors registry does not hold."""
    if value.paper is not None:
        value.marks = paper_marks(config, task, backbone, variant, cell)
    return value


def _marks_note(t: Table) -> list[str]:
    """The legend of the protocol marks, for a table that shows any."""
    if not any(isinstance(c, Value) and c.marks for r in t.rows for c in r):
        return []
    return [f"≠ letters: where our cell's protocol differs from the paper's (Lai et al. 2024: one number per cell, "
            f"selected on the test split): {LEGEND}."]


def _missing_note(config: Config, cells: list[tuple[str, Cell]]) -> list[str]:
    tasks = [t for t, c in cells if not c.n]
    if not tasks:
        return []
    tasks = list(dict.fromkeys(tasks))
    every = set(tasks) == {r.task for r in config.plan}
    return [f"— = not run yet; fill with: `{config.fill_command([] if every else tasks)}`"]


def table_main(config: Config, spec: TableSpec) -> Table:
    """Tables 1 (2D) and 3 (3D): per task, each metric without (✗) and with (✓) the booster; a Backbone column
    when the study has several."""
    backbones, tasks = config.backbones(), config.tasks()
    several = len(backbones) > 1
    header = (["Backbone"] if several else []) + ["Metric"] + [f"{_title(k)} {m}" for k in tasks for m in "✗✓"]
    t = _start(config, spec, header)
    seen = []
    for backbone in backbones:
        for metric in spec.metrics:
            row = ([config.backbone_title(backbone)] if several else []) + [metric.upper()]
            for task in tasks:
                for variant in config.study.table_variants(spec):
                    cell = config.cell(task, backbone, variant)
                    value = cell.value(metric, spec.paper_value(task, variant, metric, backbone))
                    _mark(value, config, task, backbone, variant, cell)
                    value.group = f"{backbone} {metric} {task}"  # without against with the booster
                    row.append(value)
                    _trace(t, f"{backbone} {metric}", f"{task} {variant}", metric, cell)
                    seen.append((task, cell))
            t.rows.append(row)
    t.notes += _missing_note(config, seen) + _marks_note(t)
    if config.preset or config.overrides:
        names = "/".join(config.backbone_title(b) for b in backbones)
        t.notes.append(f"Our runs use {config.label} ({names}); the paper's values beside them come from its own, "
                       f"larger configuration and are for orientation only.")
    return t


def table_prior(config: Config, spec: TableSpec) -> Table:
    """Tables 2 (2D) and 4 (3D): one metric beside the prior methods the paper lists, then ours per variant."""
    (metric,) = spec.metrics
    tasks = config.study.tasks
    t = _start(config, spec, ["Method"] + [_title(k) for k in tasks])
    for method, values in spec.prior.items():
        t.rows.append([f"{method} (paper)"] + [f"{v:.1f}" if v is not None else "—" for v in values])
    seen = []
    for backbone in config.backbones():
        for variant in config.study.table_variants(spec):
            label = config.study.label(variant)
            suffix = f"+{label}" if label else ""
            row = [f"{config.backbone_title(backbone)}{suffix} (ours)"]
            for task in tasks:
                cell = config.cell(task, backbone, variant)
                row.append(cell.value(metric))
                row[-1].group = task
                _trace(t, f"{backbone}{suffix}", task, metric, cell)
                seen.append((task, cell))
            t.rows.append(row)
    if spec.source:
        t.notes.append(f"Prior-method rows: {spec.source}.")
    t.notes += _missing_note(config, seen)
    return t


def _params(cell: Cell, paper: float | None) -> Value:
    """The parameter count in millions: one number, no spread and no (n)."""
    return _Params(cell.runs["params_total"].iloc[0] / 1e6 if cell.n else None, 0.0, 0, paper or None)


class _Params(Value):
    """A parameter count: "12.3 [45.6]", never bold (fewer is not better)."""

    def ours(self) -> str:
        return "—" if self.mean is None else f"{self.mean:.1f}"

    def __str__(self) -> str:
        return self.ours() + (f" [{self.paper:.1f}]" if self.paper else "")


def table_ablation(config: Config, spec: TableSpec) -> Table:
    """Tables 5 and 6 and the control study: one row per task x backbone x variant, a column per metric."""
    t = _start(config, spec, ["Method", "Dataset"] + [HEADERS[m] for m in spec.metrics])
    seen, with_paper = [], set()
    planned = {(r.task, r.backbone) for r in config.plan}
    for task in config.tasks():
        for backbone in [b for b in config.backbones() if (task, b) in planned]:  # a 3D backbone has no 2D rows
            for variant in config.study.table_variants(spec):
                cell = config.cell(task, backbone, variant)
                label = config.study.label(variant)
                name = config.backbone_title(backbone) + (f" + {label}" if label else "")
                row = [name, _title(task)]
                for metric in spec.metrics:
                    paper = spec.paper_value(task, variant, metric, backbone)
                    if paper is not None:
                        with_paper.add(metric)
                    if metric == "params":
                        row.append(_params(cell, paper))
                        continue
                    row.append(cell.value(metric, paper))
                    row[-1].group = f"{task} {backbone} {metric}"
                    _trace(t, name, task, metric, cell)
                seen.append((task, cell))
                t.rows.append(row)
    # "[paper]" in a column's header only where the paper gives values in it (the control study has none)
    t.header[2:] = [f"{HEADERS[m]} [paper]" if m in with_paper else HEADERS[m] for m in spec.metrics]
    t.notes += _missing_note(config, seen)
    return t


def table_layers(config: Config, spec: TableSpec) -> Table:
    """The layer study: one metric, a row per variant (the baseline, then one per LM layer), a column per task."""
    (metric,) = spec.metrics
    tasks = config.tasks()
    t = _start(config, spec, ["F_L"] + [_title(k) for k in tasks])
    seen = []
    for variant in config.study.table_variants(spec):
        row = [config.study.label(variant)]
        for task in tasks:
            backbone = next(r.backbone for r in config.plan if r.task == task)
            cell = config.cell(task, backbone, variant)
            row.append(cell.value(metric))
            row[-1].group = task
            _trace(t, variant, task, metric, cell)
            seen.append((task, cell))
        t.rows.append(row)
    t.notes += _missing_note(config, seen)
    return t


RENDERERS: dict[str, Callable[[Config, TableSpec], Table]] = {
    "main": table_main, "prior": table_prior, "ablation": table_ablation, "layers": table_layers}


def build_tables(configs: list[Config]) -> list[Table]:
    """Every table the studies declare, the paper's in its order (Table 1 first), then the others by study."""
    built = [(spec.paper_table or math.inf, RENDERERS[spec.kind](config, spec))
             for config in configs for spec in config.study.tables]
    return [table for _, table in sorted(built, key=lambda pair: pair[0])]


OUTSIDE_TITLE = "Completed runs outside the studies' plans"


def table_outside(outside: list[tuple[str, Cell]]) -> Table:
    """Completed runs that fit no study's cell, one row per configuration, labelled by what differs."""
    t = Table("outside", f"{OUTSIDE_TITLE} (test %, mean ± std (n) over seeds)",
              ["Configuration (nearest study cell or task recipe, then the keys that differ)", "Dataset", "Backbone",
               "Booster", "ACC", "AUC"], [])
    for label, cell in outside:
        first = cell.runs.iloc[0]
        t.rows.append([label, _title(first["task"]), _title(first["backbone"]), first["booster"], cell.value("acc"),
                       cell.value("auc")])
        for metric in ("acc", "auc"):
            _trace(t, label, f"{first['task']} {first['backbone']} {first['booster']}", metric, cell)
    return t


CV_TITLE = "Cross-validation by patients on cohort files"


def table_cv(groups: list[list[dict]]) -> Table:
    """One row per cross-validation (cohort.cv_groups): the mean ± std over its folds of the test metrics,
    PneumoLLM's Sens, Spec, Acc, AUC and AVG for binary tasks (its Tables 2-5), "—" where a task has none."""
    from ..cohort import fold_summary

    labels = ["Sens", "Spec", "Acc", "AUC", "AVG"]
    t = Table("cv", f"{CV_TITLE} (test %, mean ± std over folds)",
              ["Cohort", "Backbone", "Model", "Seed", "Folds"] + labels, [])
    for rows in groups:
        first, summary = rows[0], fold_summary(rows)
        done = f"{len(rows)} of {int(first['folds'])}"
        t.rows.append([first["task"], _title(first["backbone"]), first["booster"], str(first["seed"]), done] +
                      [f"{summary[m][0]:.2f} ± {summary[m][1]:.2f}" if m in summary else "—" for m in labels])
        for metric, (mean, std) in summary.items():
            t.traces.append({"table": "cv", "row": f"{first['task']} {first['backbone']} {first['booster']}",
                             "column": f"seed {first['seed']}", "metric": metric, "mean": round(mean, 4),
                             "std": round(std, 4), "n": len(rows), "run_ids": ";".join(r["run_id"] for r in rows)})
    return t


def _diff(d: PairedDiff) -> str:
    mark = " †" if d.includes_zero else ""
    return f"{100 * d.mean_diff:+.2f} ({100 * d.ci_low:+.2f} to {100 * d.ci_high:+.2f}){mark}"


def table_pairs(pairs: list[Pair]) -> Table:
    """Every paired comparison: the difference of each metric with its bootstrap interval."""
    t = Table("pairs", "Paired differences (variant minus reference), percentage points, 95% bootstrap CI",
              ["Study", "Config", "Dataset", "Backbone", "Comparison", "n", "ΔACC", "ΔAUC", "AUC verdict"], [])
    for p in pairs:
        t.rows.append([p.config.study.name, p.config.label, _title(p.task), p.config.backbone_title(p.backbone),
                       f"{p.variant} − {p.reference}", str(p.auc.n_seeds), _diff(p.acc), _diff(p.auc), p.auc.verdict])
        for metric, d in (("acc", p.acc), ("auc", p.auc)):
            t.traces.append({"table": "pairs", "row": f"{p.config.study.name} {p.task} {p.backbone}",
                             "column": f"{p.variant}-{p.reference}", "metric": metric,
                             "mean": round(100 * d.mean_diff, 4), "std": None, "n": d.n_seeds,
                             "run_ids": ";".join(p.run_ids)})
    n_boot = pairs[0].auc.n_boot if pairs else 2000
    t.notes.append("† = the interval includes zero: no clear difference. Method: " + STATS_METHOD.format(n_boot=n_boot))
    return t


def summary(pairs: list[Pair]) -> list[str]:
    """One sentence per task (and backbone/configuration) on whether R-LLM helped its baseline."""
    lines, seen = [], set()
    for p in pairs:
        key = (p.task, p.backbone, p.config.label)
        if (p.variant, p.reference) != HEADLINE or key in seen:
            continue
        seen.add(key)
        label = f"{_title(p.task)} ({p.config.backbone_title(p.backbone)}, {p.config.label})"
        lines.append(describe(label, p.acc, p.auc))
    return lines


def outside_summary(outside: list[tuple[str, Cell]]) -> list[str]:
    """A sentence pointing at the runs outside every plan, which the tables above them do not show."""
    if not outside:
        return []
    n, groups = sum(cell.n for _, cell in outside), len(outside)
    runs = f"{n} completed run{'s' if n != 1 else ''} ({groups} configuration{'s' if groups != 1 else ''})"
    return [f"{runs} {'fits' if n == 1 else 'fit'} no study's cell (made with --epochs, --set and such): see "
            f"\"{OUTSIDE_TITLE}\"."]
