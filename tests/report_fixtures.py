"""A fabricated results folder: rows for planned runs with scores whose quality the test chooses."""

from __future__ import annotations

import numpy as np

from medboost_cli import metrics
from medboost_cli.results import COLUMNS, write_row
from medboost_cli.studies import expand, load_study


def fabricate(results_dir, study: str, tasks=None, seeds: int = 3, preset: str | None = "cpu",
              quality: dict[str, float] | None = None, n_test: int = 200):
    """Write completed rows for ``study``'s runs; ``quality[variant]`` sets how well the scores separate classes."""
    quality = quality or {}
    rows = []
    for run in expand(load_study(study, preset), tasks=tasks, seeds=seeds, preset=preset):
        task = run.recipe.task_info
        rng = np.random.default_rng(abs(hash(run.task)) % 2**32)
        labels = rng.integers(0, task.n_classes, size=(n_test, 1))
        noise = np.random.default_rng(run.seed * 1000 + len(run.variant)).normal(size=(n_test, task.n_classes))
        logits = noise + quality.get(run.variant, 1.0) * np.eye(task.n_classes)[labels[:, 0]]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        m = metrics.evaluate(labels, scores, task.task_type)
        row = {c: None for c in COLUMNS}
        row.update(run_id=run.run_id, status="completed", task=run.task, flag=task.flag, backbone=run.backbone,
                   booster=run.booster, seed=run.seed, test_acc=m["acc"], test_auc=m["auc"], val_acc=m["acc"],
                   val_auc=m["auc"], params_total=1_000_000 + 1000 * len(run.variant), params_trainable=900_000,
                   test_labels=labels.tolist(), test_scores=scores.astype(np.float32).tolist(),
                   config_json=run.recipe.model_dump_json())
        write_row(results_dir, row)
        rows.append(row)
    return rows
