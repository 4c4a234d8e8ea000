"""The metric panel of a run's test scores, beside AUC and ACC (metrics.py, which keep medmnist.Evaluator's
numbers): scikit-learn's balanced accuracy, macro-F1, MCC and per-class recall; for binary tasks sensitivity and
specificity at 0.5 and at the threshold chosen on the validation split (Youden's J); the expected calibration
error; the quadratic weighted kappa for ordinal tasks.

Predictions follow metrics.acc: binary tasks score label 1 above 0.5 (the last column), multi-class and ordinal
tasks take the argmax, multi-label tasks score each label above 0.5. At the validation threshold a sample is
positive at or above it (the convention of sklearn's ``roc_curve``, which chose it).

Multi-label tasks: balanced accuracy, MCC and ECE are the mean over labels of each label's binary value, macro-F1
and per-class recall (per label) are sklearn's own multi-label forms; sensitivity, specificity, the threshold and
the kappa do not apply (named in ``not_applicable``). A value that is undefined (a class absent from the labels)
is NaN in Python and null in the JSON column.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, f1_score, matthews_corrcoef, recall_score,
                             roc_curve)

from .metrics import BINARY, MULTILABEL, _as_2d, sensitivity, specificity

ORDINAL = "ordinal-regression"
ECE_BINS = 15
# The panel's flat columns in a row (``panel_columns``), beside its JSON one.
FLAT = {"test_balanced_acc": "balanced_acc", "test_macro_f1": "macro_f1", "test_mcc": "mcc", "test_ece": "ece"}


def predictions(y_score: np.ndarray, task_type: str) -> np.ndarray:
    """The predicted labels of metrics.acc: (N,) class indices, or (N, L) 0/1 for multi-label tasks."""
    y_score = _as_2d(y_score)
    if task_type == MULTILABEL:
        return (y_score > 0.5).astype(int)
    if task_type == BINARY:
        return (y_score[:, -1] > 0.5).astype(int)
    return y_score.argmax(axis=1)


def ece(correct: np.ndarray, confidence: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the sample-weighted mean over ``bins`` equal-width confidence bins (lower edge
    open, upper closed; a confidence of 0 falls in the first) of |accuracy - mean confidence|."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / len(confidence)) if len(confidence) else float("nan")


def top_label_ece(y_true: np.ndarray, y_score: np.ndarray, task_type: str) -> float:
    """ECE of the top label's probability (multi-label: each label's max(p, 1 - p), averaged over labels)."""
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    if task_type == MULTILABEL:
        per = [ece((y_score[:, i] > 0.5) == (y_true[:, i] > 0), np.maximum(y_score[:, i], 1 - y_score[:, i]))
               for i in range(y_score.shape[1])]
        return float(np.mean(per))
    return ece(y_score.argmax(axis=1) == y_true[:, 0], y_score.max(axis=1))


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary: the score threshold that maximises sensitivity + specificity - 1 on (``y_true``, ``y_score``), the
    first such one of sklearn's ``roc_curve``; NaN when one class is absent."""
    y, s = _as_2d(y_true)[:, 0] > 0, _as_2d(y_score)[:, -1]
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, thresholds = roc_curve(y, s)
    return float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))


def _recall_at(y: np.ndarray, s: np.ndarray, threshold: float, positive: int) -> float:
    relevant = y == positive
    if math.isnan(threshold) or not relevant.any():
        return float("nan")
    return float(((s >= threshold) == bool(positive))[relevant].mean())


def _binary_extra(y_true: np.ndarray, y_score: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> dict:
    threshold = youden_threshold(*val) if val is not None else float("nan")
    y, s = (_as_2d(y_true)[:, 0] > 0).astype(int), _as_2d(y_score)[:, -1]
    return {"sens_at_0.5": sensitivity(y_true, y_score), "spec_at_0.5": specificity(y_true, y_score),
            "val_threshold": threshold, "sens_at_val_threshold": _recall_at(y, s, threshold, 1),
            "spec_at_val_threshold": _recall_at(y, s, threshold, 0)}


def _per_label(fn, y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([fn(y[:, i], p[:, i]) for i in range(y.shape[1])]))


def _multilabel(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    return {"balanced_acc": _per_label(balanced_accuracy_score, y_true, y_pred),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=np.nan)),
            "mcc": _per_label(matthews_corrcoef, y_true, y_pred),
            "recall_per_class": recall_score(y_true, y_pred, average=None, zero_division=np.nan).tolist(),
            "not_applicable": ["sens_at_0.5", "spec_at_0.5", "val_threshold", "qwk"]}


def _single_label(y: np.ndarray, y_pred: np.ndarray, n_classes: int, task_type: str) -> dict[str, Any]:
    labels = list(range(n_classes))
    out = {"balanced_acc": float(balanced_accuracy_score(y, y_pred)),
           "macro_f1": float(f1_score(y, y_pred, labels=labels, average="macro", zero_division=np.nan)),
           "mcc": float(matthews_corrcoef(y, y_pred)),
           "recall_per_class": recall_score(y, y_pred, labels=labels, average=None, zero_division=np.nan).tolist()}
    if task_type == ORDINAL:
        out["qwk"] = float(cohen_kappa_score(y, y_pred, labels=labels, weights="quadratic"))
    not_applicable = ([] if task_type == BINARY else ["sens_at_0.5", "spec_at_0.5", "val_threshold"]) \
        + ([] if task_type == ORDINAL else ["qwk"])
    return out | {"not_applicable": not_applicable}


def panel(y_true: np.ndarray, y_score: np.ndarray, task_type: str,
          val: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The panel of (``y_true``, ``y_score``): labels (N,) or (N, L) and probabilities (N, C). ``val``: the
    validation split's (labels, scores) of the same weights, for a binary task's threshold."""
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    y_pred = predictions(y_score, task_type)
    with warnings.catch_warnings():  # an absent class: NaN (or sklearn's 0 for MCC), not a warning per run
        warnings.simplefilter("ignore")
        if task_type == MULTILABEL:
            out = _multilabel(y_true.astype(int), y_pred)
        else:
            out = _single_label(y_true[:, 0].astype(int), y_pred, y_score.shape[1], task_type)
        if task_type == BINARY:
            out |= _binary_extra(y_true, y_score, val)
    return {"n": len(y_true), **out, "ece": top_label_ece(y_true, y_score, task_type), "ece_bins": ECE_BINS}


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def panel_columns(result: dict[str, Any]) -> dict[str, Any]:
    """A row's panel columns: ``test_panel_json`` (NaN as null) and the flat numbers of ``FLAT``."""
    flat = {column: result.get(key) for column, key in FLAT.items()}
    return {"test_panel_json": json.dumps({k: _plain(v) for k, v in result.items()}), **flat}


def run_panel(run: Any, scores: np.ndarray) -> dict[str, Any]:
    """An engine.Run's panel columns from its test ``scores`` (the selected checkpoint's). A binary task's threshold
    comes from the selected epoch's validation scores, kept when that epoch was validated (no pass more); a run
    resumed after that epoch has them no longer and scores the validation split once with the same weights."""
    splits, task_type, val = run.data.splits, run.recipe.task_info.task_type, None
    if task_type == BINARY:
        kept = run.val_scores.get("best")
        val = (splits["val"].labels.cpu().numpy(), kept if kept is not None else run.score("val")[1])
    return panel_columns(panel(splits["test"].labels.cpu().numpy(), scores, task_type, val))
