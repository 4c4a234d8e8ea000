"""One step of training or scoring, on uint8 batches already on the device: the batch transforms a recipe asks for,
the loss, one optimisation step (with micro-batches), and the probabilities of a split (sharded over processes).
The training loop (engine.py), evaluation and ``medboost bench`` all take their steps from here."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed, metrics
from .data import BatchTransform, Split
from .distributed import World
from .errors import ConfigError
from .hardware import autocast
from .resizing import resize_mode

if TYPE_CHECKING:
    from .recipes import Recipe


def make_transforms(recipe: Recipe, backbone: nn.Module) -> tuple[BatchTransform, BatchTransform]:
    """The training (augmenting) and the evaluation transform of ``recipe`` for ``backbone``'s input; a
    ``data.resize`` that cannot bring the recipe's images to that input is one ConfigError line."""
    d = recipe.data
    resize = resize_mode(d.resize)
    problem = resize.problem(d.size, backbone.input_size)
    if problem:
        raise ConfigError(f"data.resize={d.resize}: {problem}")
    common = dict(out_size=backbone.input_size, in_chans=backbone.in_chans, mean=backbone.mean, std=backbone.std,
                  resize=resize)
    train = BatchTransform(**common, hflip=d.hflip, vflip=d.vflip, dflip=d.dflip, scale=tuple(d.scale),
                           translate=d.translate, rotate=d.rotate, padding=d.padding)
    return train, BatchTransform(**common)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, task_type: str, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = logits.float()
    if task_type == metrics.MULTILABEL:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels[:, 0], label_smoothing=label_smoothing)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               transform: BatchTransform, augment: torch.Generator | None, amp: torch.dtype | None, task_type: str,
               label_smoothing: float = 0.0, grad_clip: float | None = None, *, theta: torch.Tensor | None = None,
               loss_scale: float = 1.0, micro_batch: int | None = None) -> torch.Tensor:
    """One optimisation step on a uint8 batch already on the device; returns the (detached) mean loss, no host
    sync. ``theta``: the batch's affine maps, drawn beforehand (else from ``augment``); ``loss_scale``: the
    weight of this batch's mean loss in the gradient (a process's share of a global batch).

    ``micro_batch``: forward and backward at most this many samples at a time, each chunk's mean loss weighted by
    its share of the batch, then one clip and one optimizer step: the batch's gradient with one chunk's activations
    in memory. The maps are drawn for the whole batch first, as without chunks; under DDP the gradients are
    averaged once, after the last chunk. Equal to rounding, except that dropout and drop-path draw their masks
    chunk by chunk and a conv stem's BatchNorm normalises each chunk by its own statistics (as each process does
    under DDP on CPU)."""
    n = len(images)
    if theta is None and augment is not None:
        theta = transform.maps(n, images.ndim - 2, augment)  # the maps transform(images, augment) would draw
    optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=images.device)
    chunk = micro_batch or n
    for lo in range(0, n, chunk):  # one chunk (weight 1.0, exact) without micro_batch
        hi = min(lo + chunk, n)
        # DDP: no all-reduce until the last chunk's backward
        with (nullcontext() if hi == n or not hasattr(model, "no_sync") else model.no_sync()):
            x = transform(images[lo:hi], None, theta=None if theta is None else theta[lo:hi])
            with autocast(images.device, amp):
                logits = model(x)
            part = loss_fn(logits, labels[lo:hi], task_type, label_smoothing) * ((hi - lo) / n)
            (part * loss_scale).backward()
        loss += part.detach()
    if grad_clip:
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, transform: BatchTransform, batch_size: int, amp: torch.dtype | None,
    task_type: str, world: World = World(),
) -> tuple[np.ndarray, float]:
    """Probabilities for every sample of ``split`` and the mean loss. With several processes (``world``), each
    scores its contiguous share of the samples and all of them get every score, in order: each sample once."""
    model.eval()
    device = next(model.parameters()).device
    lo, hi = world.share(len(split))
    scores, loss_sum = [], torch.zeros((), device=device)
    for start in range(lo, hi, batch_size):
        x = transform(split.images[start : min(start + batch_size, hi)])
        y = split.labels[start : min(start + batch_size, hi)]
        with autocast(device, amp):
            logits = model(x)
        loss_sum += loss_fn(logits, y, task_type) * len(y)
        scores.append(metrics.probabilities(logits, task_type))
    if world.size == 1:
        return torch.cat(scores).cpu().numpy(), float(loss_sum) / max(1, len(split))
    shares = distributed.gather((torch.cat(scores).cpu().numpy() if scores else None, float(loss_sum)))
    return np.concatenate([s for s, _ in shares if s is not None]), sum(l for _, l in shares) / max(1, len(split))
