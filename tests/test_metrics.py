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
