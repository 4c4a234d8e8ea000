"""The one check of a run's checkpoint (``last.pt``, ``best.pt``) before any of it reaches a model or an optimiser:
its keys and the type of each entry, the trainable weights' names and shapes against the model's, the optimiser
state against the optimiser's parameter groups and shapes, and the model it was saved from (its configuration
hash). A checkpoint that fails is a ``ModelFileError`` (exit 4): one line naming the file, what is wrong and what
to do. (The frozen LM layer's hash is compared by ``models.check_frozen_hash`` once the entry's type is known.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import ModelFileError

NUMBER = (int, float)
OPTIONAL_TEXT = (str, type(None))
# entry -> the types it may have, per kind of checkpoint
BEST_ENTRIES: dict[str, tuple[type, ...]] = {
    "epoch": (int,), "trainable": (dict,), "frozen_sha256": OPTIONAL_TEXT, "config_hash": (str,),
}
LAST_ENTRIES: dict[str, tuple[type, ...]] = {
    "epoch": (int,), "history": (list,), "best_epoch": (int, type(None)), "best_value": NUMBER,
    "train_seconds": NUMBER, "started_at": (str,), "trainable": (dict,), "optimizer": (dict,), "schedule": (dict,),
    "frozen_sha256": OPTIONAL_TEXT, "config_hash": (str,),
}
FIX = {"last": "rerun without --resume (the run starts over; add --force if it is completed)",
       "best": "retrain the run with --force"}
MAX_NAMED = 3


def _names(names: list[str]) -> str:
    shown = ", ".join(str(n)[:80] for n in names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def check_checkpoint(ckpt: dict[str, Any], path: Path, kind: str, model: nn.Module,
                     optimizer: torch.optim.Optimizer | None = None, config_hash: str | None = None) -> None:
    """Raise a ``ModelFileError`` when ``ckpt`` (read from ``path``, a ``kind`` "last" or "best" checkpoint) does
    not fit ``model`` (and ``optimizer``, and the configuration ``config_hash``) exactly."""
    problem = (_entries_problem(ckpt, LAST_ENTRIES if kind == "last" else BEST_ENTRIES)
               or (config_hash is not None and ckpt["config_hash"] != config_hash
                   and "saved with another configuration")
               or _weights_problem(ckpt["trainable"], model)
               or (optimizer is not None and _optimizer_problem(ckpt["optimizer"], optimizer)))
    if problem:
        raise ModelFileError(f"{path}: {problem}; {FIX[kind]}")


def _entries_problem(ckpt: dict[str, Any], entries: dict[str, tuple[type, ...]]) -> str | None:
    lacks = [k for k in entries if k not in ckpt]
    if lacks:
        return f"not a whole {len(entries)}-entry checkpoint: it lacks {_names(lacks)}"
    wrong = [f"{k} is a {type(ckpt[k]).__name__}" for k, types in entries.items()
             if not isinstance(ckpt[k], types) or (isinstance(ckpt[k], bool) and bool not in types)]
    return f"damaged entries: {_names(wrong)}" if wrong else None


def _weights_problem(weights: dict[Any, Any], model: nn.Module) -> str | None:
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {k: v for k, v in model.state_dict().items() if k not in frozen}
    not_tensors = [str(k) for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        return f"its trainable weights hold entries that are not named tensors ({_names(not_tensors)})"
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        return (f"its weights come from another model (missing {_names(missing) or 'none'}, unexpected "
                f"{_names(unexpected) or 'none'}); was the recipe changed?")
    shapes = [f"{k} {tuple(weights[k].shape)} where the model has {tuple(v.shape)}" for k, v in expected.items()
              if tuple(weights[k].shape) != tuple(v.shape)]
    return f"its weights have the wrong shapes: {_names(shapes)}" if shapes else None


def _optimizer_problem(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> str | None:
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or \
            not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        return "its optimizer entry is not an optimiser state (param_groups and state)"
    sizes = [len(g["params"]) for g in groups]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != ours:
        return f"its optimizer state comes from another model (parameter groups of {sizes} tensors, not {ours})"
    params = {i: p for i, p in zip((i for g in groups for i in g["params"]),
                                   (p for g in optimizer.param_groups for p in g["params"]))}
    for index, values in state.items():
        if index not in params or not isinstance(values, dict):
            return f"its optimizer state names parameter {str(index)[:40]}, which the model does not have"
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.ndim and tuple(value.shape) != tuple(params[index].shape):
                return (f"its optimizer state comes from another model ({name} of parameter {index} is "
                        f"{tuple(value.shape)}, the parameter {tuple(params[index].shape)})")
    return None
