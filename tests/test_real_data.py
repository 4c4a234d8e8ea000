"""End-to-end on the real MedMNIST files in ../shared/medmnist (skipped when they are absent).

The slowest tests of the suite (thousands of real images and volumes): marked ``slow``, so that
``pytest -m "not slow"`` gives a quick loop while editing; the full suite runs them.
"""

from __future__ import annotations

import json

import pytest

from medboost_cli.engine import evaluate_run, train
from medboost_cli.recipes import load_recipe

from .conftest import shared_file

pytestmark = pytest.mark.slow


def test_breastmnist_cpu_preset_learns(tmp_path):
    data = shared_file("breastmnist.npz").parent
    recipe = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "rllm")],
                         sets=["train.epochs=4", "backbone.depth=1"])  # 1 block: half the CPU time of 3
    row = train(recipe, data, tmp_path, log=lambda *a: None)
    assert row["status"] == "completed" and row["flag"] == "breastmnist" and json.loads(row["config_json"])["data"]["verify"]
    assert len(row["test_scores"]) == 156
    history = json.loads(row["history_json"])
    assert max(h["val_auc"] for h in history) > 0.6  # it learns: chance is 0.5
    assert evaluate_run(row["run_id"], tmp_path, data, "val")["auc"] == row["val_auc"]


def test_adrenalmnist3d_at_28_and_64(tmp_path):
    data = shared_file("adrenalmnist3d.npz").parent
    shared_file("adrenalmnist3d_64.npz")
    # At 64^3 without the random shifts: resampling 1188 volumes of 64^3 was two thirds of the test's time, and the
    # augmentation is the same code at 28 (just above) and in test_data.
    for size, patch, translate in ((28, 7, 0.05), (64, 16, 0.0)):
        recipe = load_recipe("adrenal3d", preset="cpu", flags=[("--backbone", "backbone.name", "vivit-s")],
                             sets=["train.epochs=1", "backbone.depth=1", "backbone.temporal_depth=1",
                                   "backbone.dim=32", "backbone.heads=2", "backbone.dim_head=16",
                                   f"data.size={size}", f"backbone.patch_size={patch}", f"data.translate={translate}"])
        row = train(recipe, data, tmp_path, log=lambda *a: None)
        assert row["status"] == "completed" and row["size"] == size and len(row["test_scores"]) == 298
