"""A run's row: its columns (``COLUMNS``), a new row with the columns that follow from others, and its writing
(one Parquet file per run, replaced atomically); a ``medboost bench`` case's row, written the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..compat import SCHEMA_VERSION
from ..fileio import atomic_write
from .folder_errors import in_folder
from .layout import ResultsDir

# Columns every row has, in order.
COLUMNS = [
    "run_id", "status", "task", "flag", "size", "resize", "backbone", "booster", "llm", "layer", "frozen", "llm_init",
    "lm_norm", "seed", "fold", "folds", "epochs", "epochs_done", "steps", "eval_points", "val_subset", "best_epoch",
    "select_metric", "val_acc", "val_auc", "test_acc",
    "test_auc", "test_sens", "test_spec", "params_total", "params_trainable", "train_seconds", "images_per_second", "peak_memory_mb",
    "memory_kind", "device", "world_size", "devices", "precision", "frozen_sha256", "config_hash", "config_json", "history_json",
    "versions_json", "git_commit", "started_at", "ended_at", "error", "test_labels", "test_scores",
    "run_flops", "run_fraction_of_matmul", "run_cost_json", "data_dir", "test_balanced_acc", "test_macro_f1",
    "test_mcc", "test_ece", "test_panel_json", "manifest_json", "schema_version",
]


def new_row(**values: Any) -> dict[str, Any]:
    """A row with every column, ``None`` where ``values`` says nothing; an unknown column is a bug. The columns
    that follow from others are filled in here (``derived_columns``), so that every writer's rows have them."""
    unknown = sorted(set(values) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown result column(s) {unknown}")
    values = derived_columns(values) | {k: v for k, v in values.items() if v is not None}
    return {c: values.get(c) for c in COLUMNS} | {"schema_version": SCHEMA_VERSION}


def derived_columns(values: dict[str, Any]) -> dict[str, Any]:
    """What a row's other columns determine: ``test_sens`` and ``test_spec`` (metrics.binary_report, threshold
    0.5) from binary per-sample test labels (one column) and scores (two), ``fold`` and ``folds`` from the
    recipe's data.fold and data.folds for a cohort run (``config_json``)."""
    out: dict[str, Any] = {}
    labels, scores = values.get("test_labels"), values.get("test_scores")
    if labels and scores and len(labels[0]) == 1 and len(scores[0]) == 2:
        from ..metrics import binary_report

        report = binary_report(np.asarray(labels), np.asarray(scores))
        out |= {"test_sens": report["sens"], "test_spec": report["spec"]}
    if isinstance(values.get("config_json"), str):
        data = json.loads(values["config_json"]).get("data", {})
        if data.get("folds") is not None:
            out |= {"fold": data.get("fold"), "folds": data["folds"]}
    return out


@in_folder("results_dir")  # a full disk, a read-only folder: one results error
def write_row(results_dir: Path, row: dict[str, Any], path: Path | None = None) -> Path:
    """Write (or replace) a run's row: to a temporary file in the same folder, then an atomic rename. ``path``:
    where, when not the run's place under runs/ (the row of a retraining, ``attempts``).

    Without column statistics (the footer would hold the long JSON columns twice more, as min and max) and without
    dictionary pages (one row has nothing to share): the file is less than half the size (11 KB instead of 27 KB
    for a row with 156 test scores) and reads 10-15% faster. Files written with both read the same."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row lacks columns {missing}")
    table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS}])
    return atomic_write(path or ResultsDir(results_dir).row(row["run_id"]),
                        lambda tmp: pq.write_table(table, tmp, use_dictionary=False, write_statistics=False))


@in_folder("results_dir")  # a full disk, a read-only folder: one results error
def write_bench_row(results_dir: Path, row: dict[str, Any]) -> Path:
    table = pa.Table.from_pylist([row])
    return atomic_write(ResultsDir(results_dir).bench / f"{row['bench_id']}.parquet",
                        lambda tmp: pq.write_table(table, tmp))
