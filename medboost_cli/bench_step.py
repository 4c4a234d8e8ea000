"""The training step `medboost bench` measures (``StepBench``), built as the training loop builds it, on a synthetic
batch: what `medboost bench` times per case, what precision ``auto`` times in fp32 and bf16 (precision.py), and
what the scripts under benchmarks/ profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .hardware import autocast_dtype, resolve_device
from .models import build_model
from .optimisation import make_optimizer, prepare_runner
from .recipes import Recipe
from .steps import make_transforms, train_step


@dataclass
class StepBench:
    """What measuring a recipe's training step needs, built as the training loop builds it: the model (``runner``
    is what the loop calls: compiled, channels-last), its transforms and AdamW, and a synthetic uint8 batch of the
    recipe's size with random labels (fixed seeds), with the generator its augmentation draws from."""

    recipe: Recipe
    device: torch.device
    amp: torch.dtype | None
    built: Any
    runner: torch.nn.Module
    train_tf: Any
    eval_tf: Any
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    gen: torch.Generator

    @classmethod
    def of(cls, recipe: Recipe) -> "StepBench":
        device = resolve_device(recipe.train.device)
        task = recipe.task_info
        built = build_model(recipe, task, device)
        runner = prepare_runner(built.model, recipe)
        train_tf, eval_tf = make_transforms(recipe, built.model.backbone)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (recipe.train.batch_size, task.n_channels) + (recipe.data.size,) * task.dims,
                               generator=g, dtype=torch.uint8).to(device)
        labels = torch.randint(0, 2, (recipe.train.batch_size, task.n_classes if task.multilabel else 1),
                               generator=g).to(device)
        return cls(recipe, device, autocast_dtype(recipe.train.precision, device), built, runner, train_tf, eval_tf,
                   make_optimizer(built.model, recipe), images, labels, torch.Generator().manual_seed(1))

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model

    def step(self, module: torch.nn.Module | None = None) -> None:
        """One training step as the training loop takes it (label smoothing, gradient clipping, AdamW)."""
        t = self.recipe.train
        train_step(module or self.runner, self.optimizer, self.images, self.labels, self.train_tf, self.gen, self.amp,
                   self.recipe.task_info.task_type, t.label_smoothing, t.grad_clip, micro_batch=t.micro_batch)
