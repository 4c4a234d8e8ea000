"""What a run keeps between epochs: its training state (``TrainState``), the trainable weights (never the frozen
LM layer, only its hash), and the checkpoint files that hold them (``last.pt``, ``best.pt``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import ModelFileError
from .fileio import save_torch
from .models.untrusted import load_torch_dict

CHECKPOINT_FORMAT = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything in the state dict except frozen parameters."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - frozen
    if missing or result.unexpected_keys:
        raise ModelFileError(
            f"{where}: checkpoint does not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]}); was the recipe changed?"
        )


@dataclass
class TrainState:
    """What a run has done so far. Saved in ``last.pt`` beside the trainable weights, optimiser and schedule,
    so that ``--resume`` continues exactly where the run stopped."""

    epoch: int = -1  # the last finished epoch (0-based); -1 before the first
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    best_epoch: int | None = None
    best_value: float = -math.inf  # the selection metric of best_epoch, larger is better
    train_seconds: float = 0.0
    started_at: str = field(default_factory=now)

    def add(self, record: dict[str, Any], select_metric: str) -> bool:
        """Append a finished epoch's record; True when it is the new best (the earliest epoch wins a tie)."""
        self.history.append(record)
        self.epoch = record["epoch"]
        self.train_seconds += record["seconds"]
        value = record[f"val_{select_metric}"]
        value = -math.inf if math.isnan(value) else -value if select_metric == "loss" else value
        if self.best_epoch is None or value > self.best_value:
            self.best_epoch, self.best_value = self.epoch, value
            return True
        return False

    def best_record(self) -> dict[str, Any]:
        return next((h for h in self.history if h["epoch"] == self.best_epoch), {})

    def patience_spent(self, patience: int | None) -> bool:
        return bool(patience) and self.best_epoch is not None and self.epoch - self.best_epoch >= patience


def save_checkpoint(path: Path, **content: Any) -> None:
    save_torch(path, {"format": CHECKPOINT_FORMAT, **content})


def load_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = load_torch_dict(path, "the checkpoint is damaged: rerun without --resume")  # weights_only, and a dict
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: checkpoint format {ckpt.get('format')} is not {CHECKPOINT_FORMAT}")
    return ckpt
