"""A fabricated results folder: rows for planned runs with scores whose quality the test chooses."""

from __future__ import annotations

import zlib

import numpy as np

from medboost_cli import metrics
from medboost_cli.results import COLUMNS, write_row
from medboost_cli.studies import expand, load_study


def fabricate(results_dir, study: str, tasks=None, seeds: int = 3, preset: str | None = "cpu",
              quality: dict[str, float] | None = None, n_test: int = 200, extra_sets: list[str] | None = None):
    """Write completed rows for ``study``'s runs; ``quality[variant]`` sets how well the scores separate classes;
    ``extra_sets`` as ``ablate --set`` gives them."""
    quality = quality or {}
    rows = []
    for run in expand(load_study(study, preset), tasks=tasks, seeds=seeds, preset=preset, extra_sets=extra_sets):
        task = run.recipe.task_info
        # Stable seeds (crc32, not the per-process salted hash()): the same folder in every process.
        labels = np.random.default_rng(zlib.crc32(run.task.encode())).integers(0, task.n_classes, size=(n_test, 1))
        # Noise shared by all variants of one (task, seed) plus a small part of each variant's own, as with paired
        # runs on the same test set: equal quality gives a small, noisy difference, not a systematic one.
        shape = (n_test, task.n_classes)
        shared = np.random.default_rng([zlib.crc32(run.task.encode()), run.seed]).normal(size=shape)
        own = np.random.default_rng([zlib.crc32(run.variant.encode()), run.seed]).normal(size=shape)
        noise = shared + 0.3 * own
        logits = noise + quality.get(run.variant, 1.0) * np.eye(task.n_classes)[labels[:, 0]]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        m = metrics.evaluate(labels, scores, task.task_type)
        row = {c: None for c in COLUMNS}
        row.update(run_id=run.run_id, status="completed", task=run.task, flag=task.flag, backbone=run.backbone,
                   booster=run.booster, seed=run.seed, select_metric=run.recipe.train.select_metric,
                   test_acc=m["acc"], test_auc=m["auc"], val_acc=m["acc"],
                   val_auc=m["auc"], params_total=1_000_000 + 1000 * len(run.variant), params_trainable=900_000,
                   test_labels=labels.tolist(), test_scores=scores.astype(np.float32).tolist(),
                   config_json=run.recipe.model_dump_json())
        write_row(results_dir, row)
        rows.append(row)
    return rows
