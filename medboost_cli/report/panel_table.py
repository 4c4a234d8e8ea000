"""The metric panel table of a study (panel.py's test metrics): one row per task x backbone x variant with runs,
each metric's mean ± std over the seeds that recorded a panel, with that n shown. Rows written before the panel
existed have none and are left out of the mean (the n says how many remain); "—" where a metric does not apply
to the task (sensitivity and specificity: binary tasks; kappa: ordinal tasks)."""

from __future__ import annotations

import json
import re

import numpy as np

from .gather import Cell, Config, Value
from .tables import Table, _title

# (header, the panel's key) of each column; numbers in percent, as the report's other tables.
COLUMNS = (("Bal. ACC", "balanced_acc"), ("Macro-F1", "macro_f1"), ("MCC", "mcc"), ("ECE", "ece"),
           ("Sens@0.5", "sens_at_0.5"), ("Spec@0.5", "spec_at_0.5"), ("Sens@val thr", "sens_at_val_threshold"),
           ("Spec@val thr", "spec_at_val_threshold"), ("QWK", "qwk"))
TITLE = "Metric panel"
NOTE = ("Test %, mean ± std (n) over the seeds whose rows hold a panel. Binary tasks: sensitivity and specificity "
        "at 0.5 and at the threshold maximising Youden's J on the validation split; ECE: 15 bins, top label; QWK: "
        "quadratic weighted kappa, ordinal tasks; multi-label tasks: means over labels (docs/results.md).")


def _panels(cell: Cell) -> list[dict]:
    if not cell.n or "test_panel_json" not in cell.runs:
        return []
    return [json.loads(p) for p in cell.runs["test_panel_json"] if isinstance(p, str)]


def _value(panels: list[dict], key: str) -> Value | str:
    values = np.array([p[key] for p in panels if p.get(key) is not None], dtype=float) * 100
    if not len(values):
        return "—"
    return Value(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values))


def table_panel(config: Config) -> Table:
    """The study's panel table under ``config`` (its preset and overrides); no rows where no run has a panel."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(["panel", config.study.name] + ([config.preset] if config.preset
                                                                                     else []) + list(config.overrides)))
    t = Table(f"panel-{config.study.name}", f"{TITLE}: {config.study.name} ({config.label})",
              ["Method", "Dataset"] + [h for h, _ in COLUMNS], [], notes=[NOTE], name=name)
    cells = dict.fromkeys((r.task, r.backbone, r.variant) for r in config.plan)
    for task, backbone, variant in cells:
        cell = config.cell(task, backbone, variant)
        panels = _panels(cell)
        if not panels:
            continue
        label = config.study.label(variant)
        method = config.backbone_title(backbone) + (f" + {label}" if label else "")
        values = [_value(panels, key) for _, key in COLUMNS]
        t.rows.append([method, _title(task)] + values)
        run_ids = ";".join(r for r, p in zip(cell.runs["run_id"], cell.runs["test_panel_json"]) if isinstance(p, str))
        for (_, key), value in zip(COLUMNS, values):
            if isinstance(value, Value):
                t.traces.append({"table": t.key, "row": method, "column": task, "metric": key,
                                 "mean": round(value.mean, 4), "std": round(value.std, 4), "n": value.n,
                                 "run_ids": run_ids})
    return t


def panel_tables(configs: list[Config]) -> list[Table]:
    """One panel table per study configuration whose runs recorded a panel."""
    return [t for t in (table_panel(c) for c in configs if c.has_results) if t.rows]
