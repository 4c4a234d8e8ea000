"""The anchors table of a study configuration: our cells beside the field's reference numbers for its tasks.

One table per study configuration with results. Per metric (AUC, then ACC): our rows (each backbone and variant,
mean ± std (n) over seeds), then MedMNIST v2's baselines (one row per method) and MedMNIST+'s best model per size
and training scheme (the model named in the cell). Each anchor row names its source and protocol, and "≠ ours"
gives the letters of the aspects where our cells' protocol differs from it (anchors.protocol.ASPECTS); "same"
where none does. The paper's own values stay beside our cells in the main tables.
"""

from __future__ import annotations

import re

from ..anchors import ASPECTS, LEGEND, SOURCES, Anchor, Protocol, anchors_for, marks
from ..anchors.source import SCHEMES
from .gather import Config
from .protocols import our_protocol
from .tables import Table, _title

TITLE = "Anchors"
METRICS = (("auc", "AUC"), ("acc", "ACC"))
MARKS_HEADER = "≠ ours"


def _ours(config: Config) -> dict[tuple[str, str], list[tuple[str, Protocol | None]]]:
    """(backbone, variant) -> (task, our cell's protocol, None where it has no runs) for each task it plans."""
    out: dict[tuple[str, str], list] = {}
    for run in config.plan:
        key = (run.backbone, run.variant)
        if run.seed != 0 or any(t == run.task for t, _ in out.get(key, [])):
            continue
        cell = config.cell(run.task, run.backbone, run.variant)
        out.setdefault(key, []).append((run.task, our_protocol(run.recipe, cell) if cell.n else None))
    return out


def _groups(tasks: list[str]) -> list[tuple[str, str, str, list[Anchor]]]:
    """The anchor rows: (metric, method, source key, the anchor per task) in the table's order."""
    found = {task: anchors_for(task) for task in tasks}
    rows: dict[tuple[str, str, str], list[Anchor]] = {}
    for metric, _ in METRICS:
        for task in tasks:
            for a in found[task]:
                if a.value(metric) is None or (a.best_by is not None and a.best_by != metric):
                    continue
                method = a.method if a.scheme is None else f"best {a.scheme}, {a.protocol.size}"
                rows.setdefault((metric, a.source, method), []).append(a)
    order = {key: i for i, key in enumerate(SOURCES)}

    def rank(item):
        (metric, source, _), group = item
        a = group[0]
        scheme = SCHEMES.index(a.scheme) if a.scheme in SCHEMES else -1
        return ([m for m, _ in METRICS].index(metric), order[source], scheme, a.protocol.size or 0)

    return [(m, method, s, group) for (m, s, method), group in sorted(rows.items(), key=rank)]


def _anchor_text(a: Anchor, metric: str) -> str:
    value, std = 100 * a.value(metric), a.std(metric)
    text = f"{value:.2f} ± {100 * std:.2f}" if std is not None else (f"{value:.2f}" if a.scheme else f"{value:.1f}")
    return f"{text} {a.method}" if a.scheme else text


def _row_marks(group: list[Anchor], ours: dict) -> str:
    """The letters where any of our cells on an anchor's task differs from that anchor; "same" where none does,
    "—" where none of our cells on its tasks has runs (nothing to compare)."""
    compared = [(p, a) for a in group for cells in ours.values() for task, p in cells if task == a.task and p]
    if not compared:
        return "—"
    letters = {ch for p, a in compared for ch in marks(p, a.protocol)}
    return "".join(aspect.letter for aspect in ASPECTS if aspect.letter in letters) or "same"


def _our_rows(t: Table, config: Config, ours: dict, metric: str, header: str) -> None:
    """Our rows of one metric: each backbone and variant with runs, its cells per task ("" where it plans none).
    Their numbers are the study's own cells, traced to their runs in cells.csv by the study's tables."""
    for (backbone, variant), cells in ours.items():
        known = [p for _, p in cells if p is not None]
        if not known:  # a variant without runs: nothing to set beside the anchors
            continue
        label = config.study.label(variant)
        method = config.backbone_title(backbone) + (f" + {label}" if label else "") + " (ours)"
        row = [header, method, "medboost", known[0].text(), ""]
        for task in config.tasks():
            cell = config.cell(task, backbone, variant)
            row.append(cell.value(metric) if any(k == task for k, _ in cells) else "")
        t.rows.append(row)


def _notes(sources: list[str]) -> list[str]:
    """Each cited source's citation, what its numbers are and where they were read; the marks' legend."""
    notes = [f"{SOURCES[s].citation}: {SOURCES[s].about}. Source: {SOURCES[s].reference}." for s in sources]
    return notes + [f"{MARKS_HEADER}: where our cells' protocol differs from the anchor's: {LEGEND}; \"same\": no "
                    f"stated aspect differs; \"—\": none of our cells on its tasks has runs; n/s: not stated. "
                    f"Anchors are for orientation across protocols, not like-for-like comparisons "
                    f"(docs/studies-and-reports.md, Anchors)."]


def table_anchors(config: Config) -> Table:
    """The anchors table of ``config``; no rows where none of its tasks has an anchor."""
    tasks = config.tasks()
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(["anchors", config.study.name] + ([config.preset] if config.preset
                                                                                     else []) + list(config.overrides)))
    t = Table(f"anchors-{config.study.name}", f"{TITLE}: {config.study.name} ({config.label}), test %",
              ["Metric", "Method", "Source", "Protocol", MARKS_HEADER] + [_title(k) for k in tasks], [], name=name)
    groups = _groups(tasks)
    if not groups:
        return t
    ours = _ours(config)
    for metric, header in METRICS:
        _our_rows(t, config, ours, metric, header)
        for m, method, source, group in groups:
            if m != metric:
                continue
            by_task = {a.task: a for a in group}
            t.rows.append([header, method, SOURCES[source].citation, group[0].protocol.text(), _row_marks(group, ours)]
                          + [_anchor_text(by_task[k], metric) if k in by_task else "—" for k in tasks])
    t.notes += _notes(list(dict.fromkeys(s for _, _, s, _ in groups)))
    return t


def anchor_tables(configs: list[Config]) -> list[Table]:
    """One anchors table per study configuration with results whose tasks have anchors."""
    return [t for t in (table_anchors(c) for c in configs if c.has_results) if t.rows]
