"""Training and evaluation.

Protocol: train on ``train``, score ``val`` after every epoch, keep the checkpoint with the best validation
metric (AUC by default; the earliest epoch wins a tie), then score ``test`` once, with that checkpoint. The
test split never chooses anything.

Reproducibility: data order, augmentation and dropout are drawn from generators seeded by (seed, epoch), so
a run resumed from its last epoch checkpoint replays exactly what an uninterrupted run would have done.
Checkpoints hold the trainable weights, the optimiser and schedule, and the hash of the frozen LM layer
(never the layer itself).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from .data import BatchTransform, Split, epoch_generator, load_dataset
from .errors import MedboostError
from .fileio import atomic_write
from .hardware import (
    autocast_dtype,
    device_name,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    set_threads,
)
from .models import BuiltModel, build_model, check_frozen_hash, count_parameters
from .recipes import Recipe
from .results import find_run, git_commit, package_versions, row_path, write_row

CHECKPOINT_FORMAT = 1


class Reporter(Protocol):
    def start(self, run_id: str, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def step(self, loss: float | None) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def start(self, run_id, epochs, steps_per_epoch, first_epoch):
        pass

    def step(self, loss):
        pass

    def epoch(self, record):
        pass

    def close(self):
        pass


@dataclass
class RunPaths:
    results_dir: Path
    run_id: str

    @property
    def checkpoints(self) -> Path:
        return self.results_dir / "checkpoints" / self.run_id

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"


# ------------------------------------------------------------------------------------------------ pieces


def make_transforms(recipe: Recipe, backbone: nn.Module) -> tuple[BatchTransform, BatchTransform]:
    d = recipe.data
    common = dict(out_size=backbone.input_size, in_chans=backbone.in_chans, mean=backbone.mean, std=backbone.std)
    train = BatchTransform(**common, hflip=d.hflip, vflip=d.vflip, dflip=d.dflip, scale=tuple(d.scale),
                           translate=d.translate, rotate=d.rotate, padding=d.padding)
    return train, BatchTransform(**common)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, task_type: str, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = logits.float()
    if task_type == metrics.MULTILABEL:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels[:, 0], label_smoothing=label_smoothing)


def prepare_runner(model: nn.Module, recipe: Recipe) -> nn.Module:
    """The module the loops call: channels-last and/or torch.compile when the recipe asks (both off by default,
    see the README's performance section); it shares its parameters with ``model``."""
    if recipe.train.channels_last and recipe.task_info.dims == 2:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if recipe.train.compile else model


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; no weight decay on biases, norms, position embeddings and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or any(k in name for k in ("pos_embed", "cls_token", "reg_token", "norm"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.train.lr)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to ``min_lr``; a pure function of the step, so resuming is exact."""
    t = recipe.train
    total = t.epochs * steps_per_epoch
    warmup = min(int(t.warmup_epochs * steps_per_epoch), total - 1)
    floor = t.min_lr / t.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything in the state dict except frozen parameters."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - frozen
    if missing or result.unexpected_keys:
        raise MedboostError(
            f"{where}: checkpoint does not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]}); was the recipe changed?"
        )


def save_atomic(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MedboostError(f"{path}: cannot read checkpoint ({str(e).splitlines()[0]}); rerun without --resume") from None
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise MedboostError(f"{path}: checkpoint format {ckpt.get('format')} is not {CHECKPOINT_FORMAT}")
    return ckpt


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, transform: BatchTransform, batch_size: int, amp: torch.dtype | None,
    task_type: str,
) -> tuple[np.ndarray, float]:
    """Probabilities for every sample of ``split`` and the mean loss."""
    model.eval()
    device = next(model.parameters()).device
    scores, loss_sum = [], torch.zeros((), device=device)
    for start in range(0, len(split), batch_size):
        x = transform(split.images[start : start + batch_size])
        y = split.labels[start : start + batch_size]
        with _autocast(device, amp):
            logits = model(x)
        loss_sum += loss_fn(logits, y, task_type) * len(y)
        scores.append(metrics.probabilities(logits, task_type))
    return torch.cat(scores).cpu().numpy(), float(loss_sum) / max(1, len(split))


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


def _selection_value(record: dict[str, float], metric: str) -> float:
    value = record[f"val_{metric}"]
    if math.isnan(value):
        return -math.inf
    return -value if metric == "loss" else value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------- train


def train(
    recipe: Recipe,
    data_dir: Path,
    results_dir: Path,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    log=print,
) -> dict[str, Any]:
    """Train one run and return its results row (also written to ``results_dir``)."""
    reporter = reporter or SilentReporter()
    results_dir = Path(results_dir)
    task = recipe.task_info
    run_id = recipe.run_id()
    paths = RunPaths(results_dir, run_id)
    if resume and row_path(results_dir, run_id).exists() and paths.best.exists():
        finished = find_run(results_dir, run_id)
        if finished["status"] == "completed":
            log(f"{run_id} is already completed; nothing to resume")
            return finished
    set_threads(recipe.train.threads)
    device = resolve_device(recipe.train.device)
    amp = autocast_dtype(recipe.train.precision, device)

    data = load_dataset(task, recipe.data.size, data_dir, verify=recipe.data.verify).to(device)
    built = build_model(recipe, task, device)
    model = built.model
    runner = prepare_runner(model, recipe)
    train_tf, eval_tf = make_transforms(recipe, model.backbone)
    n_train = len(data.splits["train"])
    steps_per_epoch = math.ceil(n_train / recipe.train.batch_size)
    optimizer = make_optimizer(model, recipe)
    schedule = make_schedule(optimizer, recipe, steps_per_epoch)

    state = {"epoch": -1, "history": [], "best_epoch": None, "best_value": -math.inf, "train_seconds": 0.0,
             "started_at": _now()}
    if resume and paths.last.exists():
        ckpt = load_checkpoint(paths.last)
        if ckpt["config_hash"] != recipe.config_hash():
            raise MedboostError(f"{paths.last}: saved with another configuration; rerun without --resume")
        check_frozen_hash(built, ckpt["frozen_sha256"], str(paths.last))
        load_trainable_state(model, ckpt["trainable"], paths.last)
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        state.update({k: ckpt[k] for k in state})
        log(f"resuming {run_id} after epoch {state['epoch'] + 1} of {recipe.train.epochs}")
    elif resume:
        log(f"no checkpoint for {run_id} under {paths.checkpoints}; starting from epoch 1")
    elif paths.last.exists():
        log(f"an interrupted run {run_id} exists; starting it over (use --resume to continue it)")

    total, trainable = count_parameters(model)
    base_row = {
        "run_id": run_id, "task": task.short, "flag": task.flag, "size": recipe.data.size,
        "backbone": recipe.backbone.name, "booster": recipe.booster.mode,
        "llm": recipe.booster.llm if recipe.booster.mode != "none" else None,
        "layer": built.llm.layer if built.llm else None, "frozen": recipe.booster.freeze,
        "llm_init": recipe.booster.llm_init, "lm_norm": built.llm.norm if built.llm else None,
        "seed": recipe.seed, "epochs": recipe.train.epochs,
        "select_metric": recipe.train.select_metric, "params_total": total, "params_trainable": trainable,
        "memory_kind": "gpu_allocated" if device.type == "cuda" else "process_rss", "device": device_name(device),
        "precision": str(amp).replace("torch.", "") if amp else "fp32", "frozen_sha256": built.frozen_sha256,
        "config_hash": recipe.config_hash(), "config_json": recipe.model_dump_json(),
        "versions_json": package_versions(), "git_commit": git_commit(), "started_at": state["started_at"],
    }

    def row(status: str, **extra) -> dict[str, Any]:
        history = state["history"]
        best = next((h for h in history if h["epoch"] == state["best_epoch"]), {})
        out = {c: None for c in ("val_acc", "val_auc", "test_acc", "test_auc", "peak_memory_mb", "ended_at", "error",
                                 "test_labels", "test_scores")}
        seconds = state["train_seconds"]
        out.update(base_row)
        out.update(
            status=status, epochs_done=len(history), best_epoch=state["best_epoch"],
            val_acc=best.get("val_acc"), val_auc=best.get("val_auc"), train_seconds=seconds,
            images_per_second=(n_train * len(history) / seconds) if seconds else None,
            history_json=json.dumps(history),
        )
        out.update(extra)
        return out

    write_row(results_dir, row("running"))
    reporter.start(run_id, recipe.train.epochs, steps_per_epoch, state["epoch"] + 1)
    reset_peak_memory(device)
    train_split = data.splits["train"]
    try:
        for epoch in range(state["epoch"] + 1, recipe.train.epochs):
            record = _train_epoch(runner, optimizer, schedule, train_split, train_tf, recipe, epoch, amp, reporter)
            scores, val_loss = predict(runner, data.splits["val"], eval_tf, recipe.train.eval_batch_size, amp,
                                       task.task_type)
            record.update(val_loss=val_loss, **{f"val_{k}": v for k, v in
                                                metrics.evaluate(data.splits["val"].labels.cpu().numpy(), scores,
                                                                 task.task_type).items()})
            state["history"].append(record)
            state["train_seconds"] += record["seconds"]
            state["epoch"] = epoch
            value = _selection_value(record, recipe.train.select_metric)
            if state["best_epoch"] is None or value > state["best_value"]:
                state["best_epoch"], state["best_value"] = epoch, value
                save_atomic({"format": CHECKPOINT_FORMAT, "epoch": epoch, "trainable": trainable_state(model),
                             "frozen_sha256": built.frozen_sha256, "config_hash": recipe.config_hash()}, paths.best)
            save_atomic({"format": CHECKPOINT_FORMAT, **state, "trainable": trainable_state(model),
                         "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                         "frozen_sha256": built.frozen_sha256, "config_hash": recipe.config_hash()}, paths.last)
            reporter.epoch({**record, "best_epoch": state["best_epoch"]})
            patience = recipe.train.patience
            if patience and epoch - state["best_epoch"] >= patience:
                log(f"stopping early: no better val {recipe.train.select_metric} for {patience} epochs")
                break
    except KeyboardInterrupt:
        reporter.close()
        write_row(results_dir, row("interrupted", ended_at=_now(), error="interrupted by the user"))
        raise
    except BaseException as e:
        reporter.close()
        write_row(results_dir, row("failed", ended_at=_now(), error=f"{type(e).__name__}: {e}"))
        raise
    reporter.close()

    best = load_checkpoint(paths.best)
    load_trainable_state(model, best["trainable"], paths.best)
    test = data.splits["test"]
    scores, _ = predict(runner, test, eval_tf, recipe.train.eval_batch_size, amp, task.task_type)
    test_metrics = metrics.evaluate(test.labels.cpu().numpy(), scores, task.task_type)
    final = row(
        "completed", test_acc=test_metrics["acc"], test_auc=test_metrics["auc"], ended_at=_now(),
        peak_memory_mb=peak_memory_mb(device), test_labels=test.labels.cpu().numpy().tolist(),
        test_scores=scores.astype(np.float32).tolist(),
    )
    write_row(results_dir, final)
    paths.last.unlink(missing_ok=True)  # optimizer state is not needed once the run is complete
    return final


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               transform: BatchTransform, augment: torch.Generator | None, amp: torch.dtype | None, task_type: str,
               label_smoothing: float = 0.0, grad_clip: float | None = None) -> torch.Tensor:
    """One optimisation step on a uint8 batch already on the device; returns the (detached) loss, no host sync."""
    x = transform(images, augment)
    with _autocast(images.device, amp):
        logits = model(x)
    loss = loss_fn(logits, labels, task_type, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return loss.detach()


def _train_epoch(model, optimizer, schedule, split: Split, transform: BatchTransform, recipe: Recipe, epoch: int,
                 amp, reporter: Reporter) -> dict[str, Any]:
    device = next(model.parameters()).device
    t = recipe.train
    torch.manual_seed(epoch_generator(recipe.seed, epoch, stream=2).initial_seed())  # dropout / drop-path
    order = torch.randperm(len(split), generator=epoch_generator(recipe.seed, epoch)).to(device)
    augment = epoch_generator(recipe.seed, epoch, stream=1)
    model.train()
    loss_sum = torch.zeros((), device=device)
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for i, first in enumerate(range(0, len(split), t.batch_size)):
        idx = order[first : first + t.batch_size]
        loss = train_step(model, optimizer, split.images[idx], split.labels[idx], transform, augment, amp,
                          recipe.task_info.task_type, t.label_smoothing, t.grad_clip)
        schedule.step()
        loss_sum += loss * len(idx)
        reporter.step(loss.item() if (i % 10 == 0 and device.type == "cpu") else None)  # no GPU sync in the loop
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"epoch": epoch, "train_loss": float(loss_sum) / len(split), "lr": lr, "seconds": seconds}


# ---------------------------------------------------------------------------------------------- evaluate


def load_run(run: str, results_dir: Path) -> tuple[dict[str, Any], Recipe, BuiltModel]:
    """A completed run's row, recipe and model with its best checkpoint loaded (frozen layer hash checked)."""
    row = find_run(Path(results_dir), run)
    if row["status"] != "completed":
        raise MedboostError(f"run {row['run_id']} has status '{row['status']}', not completed; finish it with --resume")
    recipe = Recipe.model_validate_json(row["config_json"])
    paths = RunPaths(Path(results_dir), row["run_id"])
    if not paths.best.exists():
        raise MedboostError(f"{paths.best}: the run's best checkpoint is missing; retrain the run")
    set_threads(recipe.train.threads)
    built = build_model(recipe, recipe.task_info, resolve_device(recipe.train.device))
    ckpt = load_checkpoint(paths.best)
    check_frozen_hash(built, ckpt["frozen_sha256"], str(paths.best))
    load_trainable_state(built.model, ckpt["trainable"], paths.best)
    built.model.eval()
    return row, recipe, built


def evaluate_run(run: str, results_dir: Path, data_dir: Path, split: str = "test") -> dict[str, Any]:
    """Re-score a saved run on ``split`` from its best checkpoint; returns the new and the recorded metrics."""
    row, recipe, built = load_run(run, results_dir)
    device = next(built.model.parameters()).device
    amp = autocast_dtype(recipe.train.precision, device)
    task = recipe.task_info
    data = load_dataset(task, recipe.data.size, Path(data_dir), verify=recipe.data.verify).to(device)
    _, eval_tf = make_transforms(recipe, built.model.backbone)
    target: Split = data.splits[split]
    scores, loss = predict(built.model, target, eval_tf, recipe.train.eval_batch_size, amp, task.task_type)
    result = metrics.evaluate(target.labels.cpu().numpy(), scores, task.task_type)
    return {"run_id": row["run_id"], "split": split, "acc": result["acc"], "auc": result["auc"], "loss": loss,
            "recorded_acc": row[f"{split}_acc"], "recorded_auc": row[f"{split}_auc"], "best_epoch": row["best_epoch"],
            "scores": scores, "labels": target.labels.cpu().numpy()}
