"""A step budget: at most ``train.steps`` optimizer steps, so that a run costs about the same on every task whatever
the size of its training split.

A run trains ``train.epochs`` passes over the training split unless they take more than ``train.steps`` steps; then
the budget binds and the run trains ``train.steps`` steps, cut into ``train.eval_points`` evenly spaced points
(point k ends after step ``steps * (k + 1) // points``). Each point plays the part an epoch plays without a budget:
the run scores the validation split at its end, keeps the best one's checkpoint (best.pt), writes last.pt, and
``--resume`` continues from the last one. Batches are drawn epoch by epoch in the seeded (seed, epoch) order and
continue across epoch boundaries; a point that starts inside an epoch replays that epoch's augmentation draws up to
its batch, and dropout is seeded per point, so a resumed run trains exactly what an uninterrupted one does. A budget
that does not bind changes nothing: the run is the epoch run.

``train.val_subset`` selects on a fixed, stratified subset of the validation split (the same for every seed and
evaluation), so that validation stays cheap on large tasks; the test split is always scored in full, once.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from . import distributed
from .data import Dataset, Split
from .seeding import EpochStream, dropout_seed, epoch_generator

VAL_SUBSET_SEED = 0  # one subset for every run of a task, so that runs compared seed by seed select on the same one


def binds(train, steps_per_epoch: int) -> bool:
    """True when the run trains ``train.steps`` steps: its epochs would take more."""
    return train.steps is not None and train.steps < train.epochs * steps_per_epoch


def points(train, steps_per_epoch: int) -> int:
    """How many times the run validates (and checkpoints): its epochs, or its evaluation points."""
    return min(train.eval_points, train.steps) if binds(train, steps_per_epoch) else train.epochs


def point_end(train, point: int, steps_per_epoch: int) -> int:
    """The global step (exclusive) at which point ``point`` (0-based) ends."""
    return train.steps * (point + 1) // points(train, steps_per_epoch)


def steps_per_point(train, steps_per_epoch: int) -> int:
    """Optimizer steps between two evaluations (the longest, for a budget that does not divide evenly)."""
    return -(-train.steps // points(train, steps_per_epoch)) if binds(train, steps_per_epoch) else steps_per_epoch


def row_columns(run) -> dict[str, Any]:
    """The row's step-budget columns: ``steps``, the optimizer steps trained when the row is written (a completed
    run whose budget binds: ``train.steps``, unless it stopped early); ``eval_points``, the evaluation points where
    the budget binds (None: the run validates once per epoch); ``val_subset``, the size of the validation subset it
    selects on (None: the full validation split)."""
    t, spe, history = run.recipe.train, run.steps_per_epoch, run.state.history
    steps = history[-1].get("step", len(history) * spe) if history else 0
    return {"steps": steps, "eval_points": points(t, spe) if binds(t, spe) else None, "val_subset": run.val_subset}


def subset_size(n: int | None, n_val: int) -> int | None:
    """The size of the validation subset ``with_val_subset`` cuts from a split of ``n_val`` samples (``n``:
    ``train.val_subset``); None where it keeps the full split."""
    return n if n is not None and n < n_val else None


def images_seen(history: list[dict[str, Any]], n_train: int) -> int:
    """Training images over the recorded epochs or points."""
    return sum(h.get("images", n_train) for h in history)


def train_point(run, point: int, reporter) -> dict[str, Any]:
    """Train epoch ``point`` (no budget) or the steps of evaluation point ``point``: its training record."""
    if not binds(run.recipe.train, run.steps_per_epoch):
        return run.train_epoch(point, reporter)
    return _train_steps(run, point, reporter)


@distributed.peer_loss_interrupts
def _train_steps(run, point: int, reporter) -> dict[str, Any]:
    """The optimizer steps of evaluation point ``point``, batch by batch as ``Run.train_epoch`` takes them."""
    t, seed, split = run.recipe.train, run.recipe.seed, run.data.splits["train"]
    spe = run.steps_per_epoch
    first, end = (point_end(t, point - 1, spe) if point else 0), point_end(t, point, spe)
    torch.manual_seed(dropout_seed(seed, point, run.world.rank))
    run.runner.train()
    loss_sum, images, epoch = torch.zeros((), device=run.device), 0, None
    lr = run.optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for step in range(first, end):
        at, i = divmod(step, spe)
        if at != epoch:
            epoch = at
            order, augment = _epoch_draws(run, split, epoch, skip=i)
        idx = order[i * t.batch_size : (i + 1) * t.batch_size]
        loss, count = run.batch_step(split, idx, augment)
        run.schedule.step()
        loss_sum += loss * count
        images += len(idx)
        reporter.step(loss.item() if (step % 10 == 0 and run.device.type == "cpu") else None)  # no GPU sync
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - start
    run.cost.seconds["train"] += seconds
    return {"epoch": point, "step": end, "train_loss": distributed.total(float(loss_sum)) / images, "lr": lr,
            "seconds": seconds, "images": images}


def _epoch_draws(run, split: Split, epoch: int, skip: int) -> tuple[torch.Tensor, torch.Generator]:
    """Epoch ``epoch``'s data order and its augmentation generator, advanced past its first ``skip`` batches."""
    seed, batch = run.recipe.seed, run.recipe.train.batch_size
    order = torch.randperm(len(split), generator=epoch_generator(seed, epoch, EpochStream.DATA_ORDER))
    augment = epoch_generator(seed, epoch, EpochStream.AUGMENT)
    for i in range(skip):
        run.transforms[0].maps(min(batch, len(split) - i * batch), split.images.ndim - 2, augment)
    return order.to(run.device), augment


def with_val_subset(data: Dataset, n: int | None) -> Dataset:
    """``data`` with its validation split cut to a fixed, stratified subset of ``n`` samples (``train.val_subset``);
    unchanged when ``n`` is None or the split is no larger."""
    val = data.splits["val"]
    if n is None or n >= len(val):
        return data
    keep = torch.as_tensor(stratified_subset(val.labels.cpu().numpy(), n, VAL_SUBSET_SEED))
    splits = {**data.splits, "val": Split(val.images[keep], val.labels[keep])}
    return Dataset(data.task, data.size, data.path, data.verified, splits)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn with each label (row) in proportion to its share, the largest
    remainders rounding up; the same for the same labels and seed."""
    rng = np.random.default_rng(seed)
    _, inverse, counts = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(take)]
    return np.sort(np.concatenate(picked))
