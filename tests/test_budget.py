"""The step budget (budget.py): at most ``train.steps`` optimizer steps with validation at ``train.eval_points``
evenly spaced points, so that the CPU preset costs about the same on every task; selection on a validation subset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medboost_cli import budget, engine
from medboost_cli.engine import make_schedule, train
from medboost_cli.recipes import load_recipe
from medboost_cli.tasks import resolve_task

from .conftest import TINY_SETS, write_medmnist
from .test_engine import InterruptAfter

TASKS = ["breast", "pneumonia", "derma", "oct", "retina", "organa", "adrenal3d", "fracture3d", "nodule3d", "vessel3d"]
# a budget that binds on the small files (48 training images, batches of 16: 3 steps an epoch)
BUDGET = ["train.steps=7", "train.eval_points=3", "train.epochs=4"]


def quiet(*args):
    pass


def budget_recipe(task="breast", mode="rllm", *sets):
    return load_recipe(task, preset="cpu", flags=[("--booster", "booster.mode", mode)],
                       sets=TINY_SETS + BUDGET + list(sets))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_recipe_trains_with_the_cpu_preset(task, tmp_path):
    write_medmnist(tmp_path / "d", task, seed=1)
    row = train(budget_recipe(task, "rllm", "train.val_subset=8"), tmp_path / "d", tmp_path / "r", log=quiet)
    history = json.loads(row["history_json"])
    assert row["status"] == "completed" and [h["step"] for h in history] == [2, 4, 7]
    assert row["best_epoch"] in (0, 1, 2) and math.isfinite(row["test_acc"])
    assert len(row["test_scores"]) == 24  # the test split in full
    assert json.loads(row["config_json"])["train"]["val_subset"] == 8


def test_a_budgeted_run_shows_points_not_epochs(data_dir, tmp_path):
    """Where the budget binds, the progress lines and the final line count evaluation points, not epochs."""
    from .test_cli import run

    sets = [a for s in TINY_SETS + BUDGET for a in ("--set", s)]
    out = run("train", "breast", "--preset", "cpu", *sets, "--data-dir", data_dir, "--results-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "train loss" in line]
    assert [line.split()[:2] for line in lines] == [["point", "1/3"], ["point", "2/3"], ["point", "3/3"]]
    assert " of 3 (7 steps) by val auc" in out.stdout + out.stderr and "best point " in out.stdout + out.stderr
    plain = run("train", "breast", "--preset", "cpu", *sets, "--set", "train.steps=null", "--data-dir", data_dir,
                "--results-dir", tmp_path)
    assert plain.returncode == 0 and "epoch   1/4  train loss" in plain.stderr and "best epoch " in plain.stdout


def test_the_budget_takes_exactly_train_steps_steps_and_selects_the_best_point(data_dir, tmp_path, monkeypatch):
    calls = []
    real = engine.train_step
    monkeypatch.setattr(engine, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    row = train(budget_recipe("breast", "none"), data_dir, tmp_path / "r", log=quiet)
    history = json.loads(row["history_json"])
    assert len(calls) == 7 and row["epochs_done"] == 3
    assert [h["step"] for h in history] == [2, 4, 7] and [h["images"] for h in history] == [32, 32, 48]
    best = max(range(3), key=lambda e: (history[e]["val_auc"], -e))  # the earliest point wins a tie
    assert row["best_epoch"] == best and row["val_auc"] == history[best]["val_auc"]
    assert row["images_per_second"] == pytest.approx(112 / row["train_seconds"])


def test_a_budget_resumed_from_its_last_point_gives_the_same_result(data_dir, tmp_path):
    recipe = budget_recipe("breast", "rllm", "backbone.drop_path=0.2", "train.warmup_epochs=1")
    full = train(recipe, data_dir, tmp_path / "full", log=quiet)
    with pytest.raises(KeyboardInterrupt):  # after point 1, which ends inside the second epoch
        train(recipe, data_dir, tmp_path / "cut", reporter=InterruptAfter(2), log=quiet)
    logs = []
    resumed = train(recipe, data_dir, tmp_path / "cut", resume=True, log=logs.append)
    assert "after epoch 2 of 3" in logs[0]
    for key in ("best_epoch", "val_auc", "val_acc", "test_auc", "test_acc", "epochs_done"):
        assert resumed[key] == full[key], key
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads(full["history_json"])]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads(resumed["history_json"])] == strip
    assert np.array_equal(np.array(resumed["test_scores"]), np.array(full["test_scores"]))


def test_a_budget_on_epoch_boundaries_trains_what_the_epochs_train(data_dir, tmp_path):
    """6 steps at 2 points over 3-step epochs: the same batches, augmentation, dropout and schedule as 2 epochs."""
    sets = ["backbone.drop_path=0.2", "train.warmup_epochs=1"]
    epochs = train(load_recipe("breast", preset="cpu", sets=TINY_SETS + ["train.steps=null"] + sets), data_dir,
                   tmp_path / "a", log=quiet)
    steps = train(load_recipe("breast", preset="cpu", sets=TINY_SETS + sets + [
        "train.steps=6", "train.eval_points=2", "train.epochs=3", "train.warmup_epochs=1.5"]),
        data_dir, tmp_path / "b", log=quiet)
    assert np.array_equal(np.array(steps["test_scores"]), np.array(epochs["test_scores"]))
    assert [h["val_auc"] for h in json.loads(steps["history_json"])] == [
        h["val_auc"] for h in json.loads(epochs["history_json"])]


def test_the_schedule_runs_over_the_budget():
    recipe = load_recipe("oct", preset="cpu", sets=["train.min_lr=0"])
    t = recipe.train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    schedule = make_schedule(optimizer, recipe, steps_per_epoch=1524)  # OCTMNIST: 97,477 images, batches of 64
    factors = [schedule.lr_lambdas[0](s) for s in range(t.steps + 1)]
    warmup = int(t.warmup_epochs / t.epochs * t.steps)
    assert factors[warmup - 1] == 1.0 and factors[warmup - 2] < 1.0 and factors[t.steps] == pytest.approx(0.0)


def test_the_cpu_preset_costs_about_the_same_on_breast_and_oct():
    """BreastMNIST keeps its 40 epochs (9 steps of 64 each); OCTMNIST trains the same number of steps, and its
    selection reads a 1,000-image subset of its validation split."""
    breast, oct_ = load_recipe("breast", preset="cpu"), load_recipe("oct", preset="cpu")
    steps = {}
    for recipe in (breast, oct_):
        t, n = recipe.train, resolve_task(recipe.task).n_samples
        per_epoch = math.ceil(n["train"] / t.batch_size)
        total = t.steps if budget.binds(t, per_epoch) else t.epochs * per_epoch
        evaluated = budget.points(t, per_epoch) * min(n["val"], t.val_subset)
        steps[recipe.task] = (total, evaluated)
    assert steps["breastmnist"][0] == 546 // 64 * 40 + 40 == 360 and steps["octmnist"][0] == 360
    assert not budget.binds(breast.train, 9)  # the epoch run: BreastMNIST trains what it trained before the budget
    assert steps["octmnist"][1] <= 1.5 * 360 * 64  # validation images stay within the training images' order


def test_a_stratified_subset_keeps_the_label_shares_and_is_fixed():
    labels = np.repeat([0, 1, 2], [60, 30, 10])[:, None]
    picked = budget.stratified_subset(labels, 20, seed=0)
    assert np.bincount(labels[picked, 0]).tolist() == [12, 6, 2] and len(set(picked.tolist())) == 20
    assert np.array_equal(picked, budget.stratified_subset(labels, 20, seed=0))
    assert np.array_equal(np.sort(picked), picked)


def test_where_the_points_fall_does_not_change_what_is_trained(data_dir, tmp_path):
    """Without dropout, 7 steps validated at 3 points or at 1 reach the same weights: a point starting inside an
    epoch continues its batches and augmentation where the previous point left them."""
    sets = ["backbone.drop_path=0", "train.warmup_epochs=1"]
    three = train(budget_recipe("breast", "none", *sets), data_dir, tmp_path / "a", log=quiet)
    one = train(budget_recipe("breast", "none", *sets, "train.eval_points=1"), data_dir, tmp_path / "b", log=quiet)
    last, only = json.loads(three["history_json"])[-1], json.loads(one["history_json"])[0]
    assert (last["step"], last["val_loss"], last["val_auc"]) == (only["step"], only["val_loss"], only["val_auc"])


def test_selection_reads_the_subset_and_the_other_splits_stay_whole(data_dir):
    from medboost_cli.data import load_dataset

    data = load_dataset(resolve_task("breast"), 28, data_dir, verify=False)
    cut = budget.with_val_subset(data, 8)
    assert [len(cut.splits[s]) for s in ("train", "val", "test")] == [48, 8, 24]
    assert np.bincount(cut.splits["val"].labels[:, 0].numpy()).tolist() == [4, 4]  # 8 of 8 + 8, stratified
    assert budget.with_val_subset(data, 16) is data and budget.with_val_subset(data, None) is data


def test_evaluate_scores_val_on_the_subset_the_run_selected_on(data_dir, tmp_path):
    from medboost_cli.engine import evaluate_run

    row = train(budget_recipe("breast", "none", "train.val_subset=8"), data_dir, tmp_path / "r", log=quiet)
    again = evaluate_run(row["run_id"], tmp_path / "r", data_dir, split="val")
    assert len(again["labels"]) == 8 and again["auc"] == row["val_auc"]


def test_the_row_records_the_steps_the_points_and_the_selection_subset(data_dir, tmp_path):
    """``steps``, ``eval_points`` and ``val_subset``: a binding budget with a subset, then an epoch run whose
    subset is no smaller than its validation split (16 samples), which selects on the whole split."""
    budgeted = train(budget_recipe("breast", "none", "train.val_subset=8"), data_dir, tmp_path / "a", log=quiet)
    assert (budgeted["steps"], budgeted["eval_points"], budgeted["val_subset"]) == (7, 3, 8)
    epochs = train(load_recipe("breast", preset="cpu", sets=TINY_SETS + ["train.steps=100", "train.val_subset=16"]),
                   data_dir, tmp_path / "b", log=quiet)
    assert (epochs["steps"], epochs["eval_points"], epochs["val_subset"]) == (2 * 3, None, None)
    from medboost_cli.results import read_row

    assert read_row(tmp_path / "a", budgeted["run_id"])["val_subset"] == 8  # as written, as read


def test_the_row_columns_follow_the_history_of_a_run_that_stopped_early():
    from types import SimpleNamespace

    recipe = load_recipe("breast", preset="cpu", sets=BUDGET)
    run = SimpleNamespace(recipe=recipe, steps_per_epoch=3, val_subset=None,
                          state=SimpleNamespace(history=[{"step": 2}, {"step": 4}]))
    assert budget.row_columns(run) == {"steps": 4, "eval_points": 3, "val_subset": None}
    run.state.history = []
    assert budget.row_columns(run)["steps"] == 0
    assert budget.subset_size(8, 16) == 8 and budget.subset_size(16, 16) is None and budget.subset_size(None, 5) is None
