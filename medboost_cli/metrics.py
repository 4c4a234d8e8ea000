"""ACC and AUC with MedMNIST's conventions (the same numbers as ``medmnist.Evaluator``; tested).

Scores are probabilities: softmax over classes for binary/multi-class/ordinal tasks (binary tasks use the
last column), sigmoid per label for multi-label tasks. Binary and multi-label ACC threshold at 0.5;
multi-class ACC takes the argmax; AUC is the mean one-vs-rest (or per-label) ROC AUC. Unlike medmnist,
a class absent from ``y_true`` is left out of the mean instead of raising; all-absent gives NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

MULTILABEL = "multi-label, binary-class"
BINARY = "binary-class"


def probabilities(logits: torch.Tensor, task_type: str) -> torch.Tensor:
    logits = logits.float()
    return logits.sigmoid() if task_type == MULTILABEL else logits.softmax(dim=-1)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def auc(y_true: np.ndarray, y_score: np.ndarray, task_type: str) -> float:
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    if task_type == MULTILABEL:
        per = [_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])]
    elif task_type == BINARY:
        per = [_auc(y_true[:, 0], y_score[:, -1])]
    else:
        per = [_auc((y_true[:, 0] == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1])]
    per = [p for p in per if not np.isnan(p)]
    return float(np.mean(per)) if per else float("nan")


def acc(y_true: np.ndarray, y_score: np.ndarray, task_type: str, threshold: float = 0.5) -> float:
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    if task_type == MULTILABEL:
        return float(((y_score > threshold) == (y_true > 0)).mean())
    if task_type == BINARY:
        return float(((y_score[:, -1] > threshold) == (y_true[:, 0] > 0)).mean())
    return float((y_score.argmax(axis=1) == y_true[:, 0]).mean())


def evaluate(y_true: np.ndarray, y_score: np.ndarray, task_type: str) -> dict[str, float]:
    return {"acc": acc(y_true, y_score, task_type), "auc": auc(y_true, y_score, task_type)}


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[:, None] if a.ndim == 1 else a
