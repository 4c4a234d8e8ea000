"""Scoring a saved run again: its row, recipe and model with the best checkpoint loaded (``load_run``, which Grad-CAM
uses too), and its metrics on a split (``evaluate_run``, `medboost evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import metrics
from .budget import with_val_subset
from .checkpoint_checks import check_checkpoint
from .checkpoints import load_checkpoint, load_trainable_state
from .data import Split, load_dataset
from .download import data_dir_from
from .errors import ModelFileError, ResultsError
from .hardware import autocast_dtype, resolve_device, set_threads
from .models import BuiltModel, build_model, check_frozen_hash
from .precision import as_recorded
from .recipes import Recipe, saved_recipe
from .results import ResultsDir, find_run
from .steps import make_transforms, predict


def load_run(run: str, results_dir: Path) -> tuple[dict[str, Any], Recipe, BuiltModel]:
    """A completed run's row, recipe and model with its best checkpoint loaded (frozen layer hash checked)."""
    row = find_run(Path(results_dir), run)
    if row["status"] != "completed":
        raise ResultsError(f"run {row['run_id']} has status '{row['status']}', not completed; finish it with --resume")
    recipe = saved_recipe(row["config_json"])
    best = ResultsDir(results_dir).best(row["run_id"])
    if not best.exists():
        raise ModelFileError(f"{best}: the run's best checkpoint is missing; retrain the run")
    set_threads(recipe.train.threads)
    # precision auto as the run resolved it: a frozen LM stored in another dtype would not match its hash
    built = build_model(as_recorded(recipe, row), recipe.task_info, resolve_device(recipe.train.device))
    ckpt = load_checkpoint(best)
    check_checkpoint(ckpt, best, "best", built.model)
    check_frozen_hash(built, ckpt["frozen_sha256"], str(best))
    load_trainable_state(built.model, ckpt["trainable"], best)
    built.model.eval()
    return row, recipe, built


def run_data_dir(row: dict[str, Any], given: Path | None) -> Path:
    """The data folder for a saved run: ``given`` (``--data-dir`` or $MEDBOOST_DATA), else the folder the run was
    trained on where it still exists, else medboost's default."""
    if given is None and row.get("data_dir") and Path(row["data_dir"]).is_dir():
        return Path(row["data_dir"])
    return data_dir_from(given)


def evaluate_run(run: str, results_dir: Path, data_dir: Path | None = None, split: str = "test") -> dict[str, Any]:
    """Re-score a saved run on ``split`` from its best checkpoint; returns the new and the recorded metrics.
    ``data_dir`` None: the folder the run was trained on (``run_data_dir``)."""
    row, recipe, built = load_run(run, results_dir)
    data_dir = run_data_dir(row, data_dir)
    device = next(built.model.parameters()).device
    amp = autocast_dtype(as_recorded(recipe, row).train.precision, device)
    task = recipe.task_info
    data = load_dataset(task, recipe.data.size, Path(data_dir), verify=recipe.data.verify).to(device)
    data = with_val_subset(data, recipe.train.val_subset)  # val as the run selected on it
    _, eval_tf = make_transforms(recipe, built.model.backbone)
    target: Split = data.splits[split]
    scores, loss = predict(built.model, target, eval_tf, recipe.train.eval_batch_size, amp, task.task_type)
    result = metrics.evaluate(target.labels.cpu().numpy(), scores, task.task_type)
    return {"run_id": row["run_id"], "split": split, "acc": result["acc"], "auc": result["auc"], "loss": loss,
            "recorded_acc": row[f"{split}_acc"], "recorded_auc": row[f"{split}_auc"], "best_epoch": row["best_epoch"],
            "scores": scores, "labels": target.labels.cpu().numpy()}
