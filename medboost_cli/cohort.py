"""Patient-level cross-validation on a cohort file: one ordinary run per fold, then the mean ± std over folds.

``medboost train cohort.npz --folds K`` trains folds 0..K-1 in turn, each a normal run (engine.train) with its
own run id and results row (the fold is part of the configuration hash; the training seed is not part of the
folds, data.fold_seed is). A fold that is already completed is kept, so the same command after an interruption
trains only what is left (``--resume`` continues the interrupted fold from its last epoch). The summary is
PneumoLLM's (Tables 2-5): Sens, Spec, Acc, AUC and their mean AVG on each fold's test split, in percent, as the
mean ± sample std over the folds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .recipes import Recipe
from .results import read_row

# The summary's columns: (label, row column) for binary tasks; others have only ACC and AUC.
BINARY_METRICS = (("Sens", "test_sens"), ("Spec", "test_spec"), ("Acc", "test_acc"), ("AUC", "test_auc"))
METRICS = (("Acc", "test_acc"), ("AUC", "test_auc"))


def fold_recipes(recipe: Recipe, folds: int) -> list[Recipe]:
    """``recipe`` for each of its ``folds`` folds (data.folds=folds, data.fold=0..folds-1), validated."""
    dumped = recipe.model_dump()
    return [Recipe.model_validate(dumped | {"data": dumped["data"] | {"folds": folds, "fold": f}})
            for f in range(folds)]


TrainOne = Callable[[Recipe], dict[str, Any]]


def train_folds(recipe: Recipe, results_dir: Path, train_one: TrainOne, *, force: bool = False,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every fold of ``recipe`` (data.folds of them) with ``train_one`` and return their completed rows,
    fold 0 first; a fold completed already is not trained again (unless ``force``), its row is used."""
    rows = []
    for one in fold_recipes(recipe, recipe.data.folds):
        done = read_row(Path(results_dir), one.run_id())
        if done is not None and done["status"] == "completed" and not force:
            log(f"fold {one.data.fold}: {one.run_id()} is already completed; using its result")
            rows.append(done)
        else:
            rows.append(train_one(one))
    return rows


def binary(rows: list[dict[str, Any]]) -> bool:
    """Whether the rows have Sens and Spec (binary tasks; rows from a DataFrame hold NaN where others hold None)."""
    return all(row.get(c) is not None and not np.isnan(row[c]) for row in rows for c in ("test_sens", "test_spec"))


def fold_line(row: dict[str, Any]) -> str:
    """One fold's test metrics in percent: ``fold 0/5 RUN_ID: Sens 80.00 Spec ...``."""
    shown = BINARY_METRICS if binary([row]) else METRICS
    values = [100 * float(row[column]) for _, column in shown]
    parts = [f"{label} {v:.2f}" for (label, _), v in zip(shown, values)]
    if binary([row]):
        parts.append(f"AVG {np.mean(values):.2f}")
    return f"fold {row['fold']}/{row['folds']} {row['run_id']}: " + " ".join(parts)


def fold_summary(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """{label: (mean, std)} in percent over the folds' test metrics (std with ddof=1; 0 for one fold). Binary
    tasks: Sens, Spec, Acc, AUC and AVG (each fold's mean of the four, then averaged); others Acc and AUC."""
    shown = BINARY_METRICS if binary(rows) else METRICS
    table = {label: 100 * np.array([float(row[column]) for row in rows]) for label, column in shown}
    if binary(rows):
        table["AVG"] = np.mean(list(table.values()), axis=0)
    return {label: (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) for label, v in table.items()}


def cv_groups(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Completed cohort rows grouped into cross-validations: the same configuration and seed but for data.fold
    (their ``config_json`` without it), each group sorted by fold; rows without folds are left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("folds") is None or np.isnan(row["folds"]) or not isinstance(row.get("config_json"), str):
            continue
        config = json.loads(row["config_json"])
        config["data"].pop("fold", None)
        groups.setdefault(json.dumps(config, sort_keys=True), []).append(row)
    return [sorted(g, key=lambda r: r["fold"]) for _, g in sorted(groups.items())]


def summary_line(rows: list[dict[str, Any]]) -> str:
    """``mean over 5 folds: Sens 80.54 ± 3.10 Spec ...``."""
    parts = [f"{label} {mean:.2f} ± {std:.2f}" for label, (mean, std) in fold_summary(rows).items()]
    return f"mean ± std over {len(rows)} folds: " + " ".join(parts)
