"""Patient-level cross-validation folds of a cohort file (``medboost prepare dicom``), each with a validation split.

PneumoLLM (Sec. 4.1) runs five-fold cross-validation "by patients" with balanced label ratios and reports the mean
over the five test folds; it has no validation split, and its released code picks the epoch on the test fold.
Here, for fold ``f`` of ``k``:

* test: the ``f``-th test part of ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)`` over the samples,
  grouped by patient and stratified by label: every patient is in exactly one test fold, all their images with
  them, and each fold's label proportions are as close to the cohort's as whole patients allow;
* val: the first test part of a second ``StratifiedGroupKFold(round(1 / val_fraction), shuffle=True,
  random_state=seed)`` over the fold's training patients: patient-disjoint from train and test; the engine
  selects the epoch on it, so the test fold is scored once;
* train: the rest.

The folds depend only on (labels, patient ids, k, seed, val_fraction) and scikit-learn's algorithm: keep the
fold seed fixed while varying the training seed, so every training seed sees the same split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .cohort_file import load_cohort
from .errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # sorted sample indices
    val: np.ndarray
    test: np.ndarray

    def split(self, name: str) -> np.ndarray:
        return getattr(self, name)


def _group_kfold(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": checked below
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(cv.split(np.zeros(len(labels)), labels, groups))


def patient_folds(labels: np.ndarray, patient_ids: np.ndarray, k: int = 5, seed: int = 0,
                  val_fraction: float = 0.2) -> list[Fold]:
    """The ``k`` folds (train, val, test index arrays) of samples with ``labels`` and ``patient_ids``."""
    labels = np.asarray(labels).reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise DataError(f"labels have shape {labels.shape}; patient folds stratify one class index per image")
    labels, groups = labels[:, 0], np.asarray(patient_ids)
    if k < 2:
        raise ConfigError(f"k={k} folds: choose at least 2 (the paper uses 5)")
    if not 0 < val_fraction <= 0.5:
        raise ConfigError(f"val_fraction={val_fraction}: choose a fraction of the training patients in (0, 0.5]")
    inner = max(2, round(1 / val_fraction))
    n_patients = len(np.unique(groups))
    if n_patients < k:
        raise DataError(f"{n_patients} patients are too few for {k} folds by patient; use fewer folds")
    classes = np.unique(labels)
    folds = []
    for f, (train_val, test) in enumerate(_group_kfold(labels, groups, k, seed)):
        train_patients = len(np.unique(groups[train_val]))
        if train_patients < inner:
            raise DataError(f"fold {f} has {train_patients} training patients, too few to hold out 1/{inner} of "
                            f"them for validation; use more patients, fewer folds or a larger val fraction")
        fit, val = _group_kfold(labels[train_val], groups[train_val], inner, seed)[0]
        fold = Fold(np.sort(train_val[fit]), np.sort(train_val[val]), np.sort(test))
        for name in SPLITS:
            absent = np.setdiff1d(classes, labels[fold.split(name)])
            if absent.size:
                raise DataError(f"fold {f}'s {name} split has no image of label {', '.join(map(str, absent))}: too "
                                f"few patients with that label for {k} folds and a 1/{inner} validation split; use "
                                f"fewer folds or a larger val fraction")
        folds.append(fold)
    return folds


def fold_splits(path: Path, k: int, fold: int, seed: int = 0,
                val_fraction: float = 0.2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"val"|"test": (images uint8 (n, S, S), labels int64 (n, 1))}`` of fold ``fold`` (0-based) of
    ``k`` of the cohort file at ``path``: MedMNIST's 2D layout, what ``data.load_dataset`` builds its splits from."""
    if not 0 <= fold < k:
        raise ConfigError(f"fold {fold}: choose 0 to {k - 1} for {k} folds")
    cohort = load_cohort(path)
    chosen = patient_folds(cohort.labels, cohort.patient_ids, k, seed, val_fraction)[fold]
    return {name: (cohort.images[chosen.split(name)], cohort.labels[chosen.split(name)]) for name in SPLITS}
