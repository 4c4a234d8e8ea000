"""ACC and AUC agree with medmnist.Evaluator on the same scores, for every MedMNIST task type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from medmnist import Evaluator

from medboost_cli import metrics
from medboost_cli.tasks import resolve_task

from .conftest import write_medmnist


@pytest.mark.parametrize("task_name", ["breast", "derma", "retina", "chestmnist", "adrenal3d"])
def test_metrics_agree_with_medmnist_evaluator(tmp_path, task_name):
    task = resolve_task(task_name)
    write_medmnist(tmp_path, task_name, n=(10, 10, 60), seed=3)
    labels = np.load(tmp_path / task.filename(28))["test_labels"]
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(60, task.n_classes)), dtype=torch.float32)
    logits[:, -1] += torch.tensor(labels[:, 0] if task.multilabel else labels[:, 0] == task.n_classes - 1) * 0.8
    scores = metrics.probabilities(logits, task.task_type).numpy()

    expected_auc, expected_acc = Evaluator(task.flag, "test", size=28, root=str(tmp_path)).evaluate(scores)
    ours = metrics.evaluate(labels, scores, task.task_type)
    assert ours["auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert ours["acc"] == pytest.approx(expected_acc, abs=1e-12)
    assert 0.0 <= ours["acc"] <= 1.0 and 0.0 <= ours["auc"] <= 1.0


def test_binary_uses_probability_of_the_positive_class():
    y = np.array([[0], [1], [1], [0]])
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    assert metrics.acc(y, scores, "binary-class") == 0.5  # 0.1<.5 ok, 0.7>.5 ok, 0.4 wrong, 0.8 wrong
    assert metrics.auc(y, scores, "binary-class") == 0.5


def test_perfect_and_inverted_scores():
    y = np.array([[0], [1], [2], [1]])
    onehot = np.eye(3)[y[:, 0]]
    assert metrics.evaluate(y, onehot, "multi-class") == {"acc": 1.0, "auc": 1.0}
    assert metrics.auc(y, 1 - onehot, "multi-class") == 0.0


def test_absent_class_is_left_out_instead_of_raising():
    y = np.array([[0], [1], [0], [1]])  # class 2 never occurs
    scores = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    assert metrics.auc(y, scores, "multi-class") == 1.0
    assert np.isnan(metrics.auc(np.zeros((3, 1)), np.full((3, 2), 0.5), "binary-class"))


def test_probabilities_softmax_or_sigmoid():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    assert torch.allclose(metrics.probabilities(logits, "multi-class").sum(1), torch.ones(2))
    assert torch.allclose(metrics.probabilities(logits, metrics.MULTILABEL), logits.sigmoid())


def test_sensitivity_specificity_agree_with_scikit_learn():
    from sklearn.metrics import confusion_matrix, recall_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(200, 1))
    p1 = np.clip(0.35 * y[:, 0] + rng.random(200) * 0.7, 0, 1)
    scores = np.stack([1 - p1, p1], axis=1)
    predicted = (p1 > 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y[:, 0], predicted).ravel()
    assert metrics.sensitivity(y, scores) == pytest.approx(recall_score(y[:, 0], predicted, pos_label=1), abs=1e-12)
    assert metrics.specificity(y, scores) == pytest.approx(recall_score(y[:, 0], predicted, pos_label=0), abs=1e-12)
    assert metrics.specificity(y, scores) == pytest.approx(tn / (tn + fp), abs=1e-12)
    assert 0 < metrics.sensitivity(y, scores) < 1 and tp + fn == y.sum()


def test_binary_report_avg_is_the_mean_of_four_like_the_paper():
    y = np.array([[1], [1], [1], [0], [0]])
    p1 = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    report = metrics.binary_report(y, np.stack([1 - p1, p1], axis=1))
    assert report["sens"] == pytest.approx(2 / 3) and report["spec"] == pytest.approx(1 / 2)
    assert report["acc"] == pytest.approx(3 / 5) and report["auc"] == pytest.approx(5 / 6)
    assert report["avg"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 5 + 5 / 6) / 4)
    # PneumoLLM's Table 2 row: Sens 80.54, Spec 67.66, Acc 75.87, AUC 78.98 -> AVG 75.76 (the mean of the four).
    assert round(np.mean([80.54, 67.66, 75.87, 78.98]), 2) == 75.76


def test_sensitivity_without_positives_is_nan():
    y = np.zeros((3, 1))
    scores = np.array([[0.8, 0.2], [0.4, 0.6], [0.9, 0.1]])
    assert np.isnan(metrics.sensitivity(y, scores)) and metrics.specificity(y, scores) == pytest.approx(2 / 3)
    assert np.isnan(metrics.binary_report(y, scores)["avg"])
