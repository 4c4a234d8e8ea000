"""How a run's model is optimised: the module the training loop calls (``prepare_runner``), AdamW over the
trainable parameters (``make_optimizer``) and the learning-rate schedule (``make_schedule``)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .budget import binds
from .compile_cache import compile_model
from .recipes import Recipe


def prepare_runner(model: nn.Module, recipe: Recipe, wrap=lambda module: module) -> nn.Module:
    """The module the loops call: channels-last and/or torch.compile when the recipe asks (both off by default;
    docs: performance; ``compile_cache.py`` says where compiled graphs are kept), then ``wrap`` (DDP for several
    processes); it shares its parameters with ``model``."""
    if recipe.train.channels_last and recipe.task_info.dims == 2:
        model.to(memory_format=torch.channels_last)
    return wrap(compile_model(model) if recipe.train.compile else model)


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) runs


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; no weight decay on 1-D parameters (biases, norm weights) and on those
    a part of the model (backbone, booster, head) names in its ``no_weight_decay()``: a ViT's position table and
    CLS token, say (each backbone family's module says which)."""
    skip = {f"{part}.{name}" for part, module in model.named_children()
            if callable(getattr(module, "no_weight_decay", None)) for name in module.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # torch's fused kernel (one pass over all parameters of a group) where it has one for every parameter's device,
    # instead of the default on CPU, a Python loop of several kernels per parameter tensor
    fused = all(p.device.type in FUSED_ADAMW_DEVICES and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=recipe.train.lr, fused=fused or None)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to ``min_lr``; a pure function of the step, so resuming is exact. Under a
    step budget that binds (budget.py) the schedule runs over ``train.steps``, the warm-up taking the share of them
    that ``warmup_epochs`` takes of ``epochs``."""
    t = recipe.train
    bound = binds(t, steps_per_epoch)
    total = t.steps if bound else t.epochs * steps_per_epoch
    per_epoch = t.steps / t.epochs if bound else steps_per_epoch
    warmup = min(int(t.warmup_epochs * per_epoch), total - 1)
    floor = t.min_lr / t.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)  # the last batch may be short; it still takes a step
