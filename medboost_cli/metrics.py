"""ACC and AUC with MedMNIST's conventions (the same numbers as ``medmnist.Evaluator``; tested).

Scores are probabilities: softmax over classes for binary/multi-class/ordinal tasks (binary tasks use the
last column), sigmoid per label for multi-label tasks. Binary and multi-label ACC threshold at 0.5;
multi-class ACC takes the argmax; AUC is the mean one-vs-rest (or per-label) ROC AUC. Unlike medmnist,
a class absent from ``y_true`` is left out of the mean instead of raising; all-absent gives NaN.

Binary tasks also get sensitivity (recall of label 1), specificity (recall of label 0) at the same 0.5 threshold,
and PneumoLLM's AVG, the plain mean of Sens, Spec, Acc and AUC (its Tables 2-5: 80.54, 67.66, 75.87 and 78.98
give 75.76).
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


def _binary_recall(y_true: np.ndarray, y_score: np.ndarray, positive: int, threshold: float) -> float:
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    truth, predicted = y_true[:, 0] > 0, y_score[:, -1] > threshold
    relevant = truth if positive else ~truth
    return float((predicted[relevant] == bool(positive)).mean()) if relevant.any() else float("nan")


def sensitivity(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Binary: the fraction of label-1 samples scored above ``threshold`` (TP / (TP + FN)); NaN without any."""
    return _binary_recall(y_true, y_score, 1, threshold)


def specificity(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Binary: the fraction of label-0 samples scored at or below ``threshold`` (TN / (TN + FP)); NaN without any."""
    return _binary_recall(y_true, y_score, 0, threshold)


def binary_report(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """PneumoLLM's columns for a binary task: sens, spec, acc, auc and avg, their mean (NaN if one is NaN)."""
    out = {"sens": sensitivity(y_true, y_score), "spec": specificity(y_true, y_score),
           **evaluate(y_true, y_score, BINARY)}
    out["avg"] = float(np.mean([out["sens"], out["spec"], out["acc"], out["auc"]]))
    return out


def evaluate(y_true: np.ndarray, y_score: np.ndarray, task_type: str) -> dict[str, float]:
    return {"acc": acc(y_true, y_score, task_type), "auc": auc(y_true, y_score, task_type)}


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[:, None] if a.ndim == 1 else a
