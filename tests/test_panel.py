"""The metric panel (panel.py) against scikit-learn called directly, on small known examples."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, f1_score, matthews_corrcoef, recall_score,
                             roc_curve)

from medboost_cli import metrics
from medboost_cli.panel import ece, panel, panel_columns, youden_threshold

Y_BIN = np.array([[0], [0], [0], [1], [1], [1], [1], [0]])
P1 = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.55, 0.2])
S_BIN = np.stack([1 - P1, P1], axis=1)
Y_VAL = np.array([[0], [1], [0], [1], [1], [0]])
P_VAL = np.array([0.2, 0.45, 0.5, 0.7, 0.42, 0.1])


def test_binary_panel_matches_sklearn():
    out = panel(Y_BIN, S_BIN, "binary-class", val=(Y_VAL, np.stack([1 - P_VAL, P_VAL], axis=1)))
    y, pred = Y_BIN[:, 0], (P1 > 0.5).astype(int)
    assert out["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert out["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert out["recall_per_class"] == pytest.approx(list(recall_score(y, pred, average=None)))
    assert out["sens_at_0.5"] == pytest.approx(recall_score(y, pred)) == metrics.sensitivity(Y_BIN, S_BIN)
    assert out["spec_at_0.5"] == pytest.approx(recall_score(1 - y, 1 - pred))
    fpr, tpr, th = roc_curve(Y_VAL[:, 0], P_VAL)
    t = th[np.argmax(tpr - fpr)]
    assert out["val_threshold"] == pytest.approx(t) == 0.42  # J = 1 on these validation scores
    at = (P1 >= t).astype(int)
    assert out["sens_at_val_threshold"] == pytest.approx(recall_score(y, at))
    assert out["spec_at_val_threshold"] == pytest.approx(recall_score(1 - y, 1 - at))
    assert "qwk" not in out and "qwk" in out["not_applicable"] and out["n"] == 8


def test_multiclass_and_ordinal_panel_match_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(4), size=30)
    y = rng.integers(0, 4, size=30)
    pred = scores.argmax(axis=1)
    for task_type in ("multi-class", "ordinal-regression"):
        out = panel(y[:, None], scores, task_type)
        assert out["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
        assert out["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
        assert out["recall_per_class"] == pytest.approx(list(recall_score(y, pred, average=None)))
        assert "sens_at_0.5" not in out and "val_threshold" in out["not_applicable"]
    assert out["qwk"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert "qwk" not in panel(y[:, None], scores, "multi-class")


def test_multilabel_panel_is_macro_over_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(40, 3))
    scores = rng.random((40, 3))
    pred = (scores > 0.5).astype(int)
    out = panel(y, scores, metrics.MULTILABEL)
    per_label = [balanced_accuracy_score(y[:, i], pred[:, i]) for i in range(3)]
    assert out["balanced_acc"] == pytest.approx(np.mean(per_label))
    assert out["mcc"] == pytest.approx(np.mean([matthews_corrcoef(y[:, i], pred[:, i]) for i in range(3)]))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert out["recall_per_class"] == pytest.approx(list(recall_score(y, pred, average=None)))
    assert {"sens_at_0.5", "val_threshold", "qwk"} <= set(out["not_applicable"])


def test_ece_by_hand():
    # two bins used out of 15: (0.9, 0.9, 0.95) with 2 of 3 right; (0.5) right
    conf, right = np.array([0.9, 0.9, 0.95, 0.5]), np.array([1, 1, 0, 1])
    by_hand = (2 * abs(1 - 0.9) + 1 * abs(0 - 0.95) + 1 * abs(1 - 0.5)) / 4  # 0.9 and 0.95 fall in different bins
    assert ece(right, conf) == pytest.approx(by_hand)
    # perfectly calibrated one-hot scores: ECE 0; top-label confidence of a binary task
    assert panel(Y_BIN, np.stack([1 - Y_BIN[:, 0], Y_BIN[:, 0]], axis=1).astype(float), "binary-class")["ece"] == 0


def test_undefined_values_are_nan_and_null_in_json():
    assert math.isnan(youden_threshold(np.ones((4, 1)), np.full((4, 2), 0.5)))
    out = panel(Y_BIN, S_BIN, "binary-class")  # no validation scores: no threshold
    assert math.isnan(out["val_threshold"])
    columns = panel_columns(out)
    stored = json.loads(columns["test_panel_json"])
    assert stored["val_threshold"] is None and stored["mcc"] == pytest.approx(out["mcc"])
    assert columns["test_mcc"] == out["mcc"] and columns["test_ece"] == out["ece"]


def test_the_manifest_reuses_the_verifications_md5_and_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    import os

    from medboost_cli import download
    from medboost_cli.results import run_manifest

    data = tmp_path / "breastmnist.npz"
    data.write_bytes(b"abc")
    assert download.md5sum(data) == "900150983cd24fb0d6963f7d28e17f72"
    reads = []
    monkeypatch.setattr(download, "open_data_file", lambda p: reads.append(p) or open(p, "rb"))
    manifest = json.loads(run_manifest(data, "cpu", "minilm", "f" * 64))
    assert manifest["data"] == {"file": "breastmnist.npz", "md5": "900150983cd24fb0d6963f7d28e17f72"} and not reads
    assert manifest["lm"] == {"source": "minilm", "frozen_sha256": "f" * 64} and manifest["machine"]["cpu"]
    data.write_bytes(b"abd")
    os.utime(data, ns=(1, 1))  # another modification time: hashed again
    assert download.known_md5(data) != "900150983cd24fb0d6963f7d28e17f72" and reads == [data]
    assert download.md5sum(data) == download.known_md5(data)  # md5sum itself always reads the file
    assert json.loads(run_manifest(None, "cpu", None, None))["data"] is None
