"""Weighted ACC/AUC equal metrics.py (and the metric on repeated samples); the paired bootstrap gives sensible
intervals and verdicts on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from medboost_cli import metrics, stats

TASK_TYPES = ["binary-class", "multi-class", "ordinal-regression", metrics.MULTILABEL]


def _data(task_type: str, n: int = 300, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores rounded to 1 decimal (many ties); one class / label never occurs."""
    rng = np.random.default_rng(seed)
    if task_type == metrics.MULTILABEL:
        labels = rng.integers(0, 2, size=(n, k))
        labels[:, 2] = 0  # absent label: left out of the AUC mean
        scores = rng.random((n, k))
    elif task_type == "binary-class":
        labels, scores = rng.integers(0, 2, size=(n, 1)), rng.dirichlet(np.ones(2), size=n)
    else:
        labels = rng.integers(0, k - 1, size=(n, 1))  # class k-1 absent
        scores = rng.dirichlet(np.ones(k), size=n)
    scores = scores + 0.3 * np.eye(scores.shape[1])[labels[:, 0] % scores.shape[1]]  # some signal
    return labels, scores.round(1)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_unit_weights_equal_metrics(task_type):
    labels, scores = _data(task_type)
    n = len(labels)
    assert stats.weighted_auc(labels, scores, task_type, np.ones(n)) == pytest.approx(
        metrics.auc(labels, scores, task_type), abs=1e-12)
    assert stats.weighted_acc(labels, scores, task_type, np.ones(n)) == pytest.approx(
        metrics.acc(labels, scores, task_type), abs=1e-12)
    many = np.ones((3, n), dtype=int)
    np.testing.assert_allclose(stats.weighted_auc(labels, scores, task_type, many),
                               [metrics.auc(labels, scores, task_type)] * 3, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.weighted_acc(labels, scores, task_type, many),
                               [metrics.acc(labels, scores, task_type)] * 3, rtol=0, atol=1e-12)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_integer_weights_equal_repeated_samples(task_type, monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 500)  # several chunks of replicates
    labels, scores = _data(task_type, n=120, seed=1)
    weights = np.random.default_rng(2).integers(0, 4, size=(7, len(labels)))
    weights[0] = np.bincount(np.random.default_rng(3).integers(0, 120, 120), minlength=120)  # a real resample
    got_auc = stats.weighted_auc(labels, scores, task_type, weights)
    got_acc = stats.weighted_acc(labels, scores, task_type, weights)
    for r, w in enumerate(weights):
        rows = np.repeat(np.arange(len(labels)), w)
        assert got_auc[r] == pytest.approx(metrics.auc(labels[rows], scores[rows], task_type), abs=1e-12)
        assert got_acc[r] == pytest.approx(metrics.acc(labels[rows], scores[rows], task_type), abs=1e-12)


def test_weight_zero_class_is_left_out_like_an_absent_class():
    labels = np.array([[0], [1], [2], [0], [1], [2]])
    scores = np.eye(3)[[0, 1, 0, 0, 2, 1]]
    weights = np.array([1, 1, 0, 1, 1, 0])  # class 2 gets no weight
    rows = np.repeat(np.arange(6), weights)
    assert stats.weighted_auc(labels, scores, "multi-class", weights) == pytest.approx(
        metrics.auc(labels[rows], scores[rows], "multi-class"), abs=1e-12)
    assert np.isnan(stats.weighted_auc(labels, scores, "multi-class", np.zeros(6)))


def _runs(n: int = 200, seeds: int = 3, k: int = 4, noise: float = 0.0):
    """Labels, random baseline scores and booster scores for several seeds."""
    rng = np.random.default_rng(10)
    labels = rng.integers(0, k, size=(n, 1))
    base = [rng.dirichlet(np.ones(k), size=n) for _ in range(seeds)]
    boost = [b + noise * rng.normal(size=b.shape) for b in base]
    return labels, base, boost


@pytest.mark.parametrize("metric", ["acc", "auc"])
def test_identical_arms_give_zero(metric):
    labels, base, _ = _runs()
    d = stats.paired_bootstrap(labels, base, [b.copy() for b in base], "multi-class", metric, n_boot=200)
    assert (d.mean_diff, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    assert d.includes_zero and d.verdict == "no clear difference"
    assert (d.n_seeds, d.n_samples, d.n_boot, d.ci_level) == (3, 200, 200, 0.95)


@pytest.mark.parametrize("metric", ["acc", "auc"])
def test_strictly_better_booster_and_swapped_arms(metric):
    labels, base, _ = _runs()
    perfect = [np.eye(4)[labels[:, 0]] for _ in base]
    better = stats.paired_bootstrap(labels, base, perfect, "multi-class", metric, n_boot=300)
    assert better.verdict == "better" and not better.includes_zero
    assert 0 < better.ci_low <= better.mean_diff <= better.ci_high
    worse = stats.paired_bootstrap(labels, perfect, base, "multi-class", metric, n_boot=300)
    assert worse.verdict == "worse" and not worse.includes_zero
    assert worse.mean_diff == pytest.approx(-better.mean_diff, abs=1e-12)
    assert worse.ci_low == pytest.approx(-better.ci_high, abs=1e-12)
    assert worse.ci_high == pytest.approx(-better.ci_low, abs=1e-12)
    assert worse.per_seed_diffs == pytest.approx([-d for d in better.per_seed_diffs], abs=1e-12)


def test_small_noisy_difference_on_few_samples_is_unclear():
    labels, base, boost = _runs(n=30, noise=0.05)
    for metric in ("acc", "auc"):
        d = stats.paired_bootstrap(labels, base, boost, "multi-class", metric, n_boot=500)
        assert d.verdict == "no clear difference" and d.includes_zero
        assert d.ci_low < d.ci_high


def test_point_estimate_is_mean_of_per_seed_differences():
    labels, base, boost = _runs(noise=0.2)
    for metric, fn in (("acc", metrics.acc), ("auc", metrics.auc)):
        d = stats.paired_bootstrap(labels, base, boost, "multi-class", metric, n_boot=50)
        expected = [fn(labels, b, "multi-class") - fn(labels, a, "multi-class") for a, b in zip(base, boost)]
        assert d.per_seed_diffs == pytest.approx(expected, abs=1e-15)
        assert d.mean_diff == pytest.approx(np.mean(expected), abs=1e-15)


@pytest.mark.parametrize("task_type", ["binary-class", metrics.MULTILABEL])
def test_single_seed_and_other_task_types(task_type):
    labels, scores = _data(task_type, n=150)
    boost = (scores + 0.2 * (labels[:, -1:] if task_type == "binary-class" else labels)).clip(0, 1)
    if task_type == "binary-class":
        boost = np.concatenate([1 - boost[:, 1:], boost[:, 1:]], axis=1)
    d = stats.paired_bootstrap(labels, [scores], [boost], task_type, "auc", n_boot=300)
    assert d.n_seeds == 1 and d.per_seed_diffs == (d.mean_diff,)
    assert d.mean_diff == pytest.approx(metrics.auc(labels, boost, task_type) - metrics.auc(labels, scores, task_type))
    assert d.ci_low <= d.mean_diff <= d.ci_high and d.verdict == "better"


def test_determinism():
    labels, base, boost = _runs(n=100, noise=0.1)
    a = stats.paired_bootstrap(labels, base, boost, "multi-class", "auc", n_boot=400, seed=7)
    b = stats.paired_bootstrap(labels, base, boost, "multi-class", "auc", n_boot=400, seed=7)
    c = stats.paired_bootstrap(labels, base, boost, "multi-class", "auc", n_boot=400, seed=8)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high) and a.mean_diff == c.mean_diff
    width = a.ci_high - a.ci_low
    assert abs(a.ci_low - c.ci_low) < 0.3 * width and abs(a.ci_high - c.ci_high) < 0.3 * width


def test_errors():
    labels, base, boost = _runs(n=20)
    with pytest.raises(ValueError, match="numbers of seeds"):
        stats.paired_bootstrap(labels, base, boost[:2], "multi-class", "auc")
    with pytest.raises(ValueError, match="no seeds"):
        stats.paired_bootstrap(labels, [], [], "multi-class", "auc")
    with pytest.raises(ValueError, match="shape"):
        stats.paired_bootstrap(labels, base, [b[:, :3] for b in boost], "multi-class", "auc")
    with pytest.raises(ValueError, match="shape"):
        stats.paired_bootstrap(labels, base, [boost[0][:10]] + boost[1:], "multi-class", "acc")
    with pytest.raises(ValueError, match="labels"):
        stats.paired_bootstrap(labels[:10], base, boost, "multi-class", "auc")
    with pytest.raises(ValueError, match="metric"):
        stats.paired_bootstrap(labels, base, boost, "multi-class", "f1")
    with pytest.raises(ValueError, match="weights"):
        stats.weighted_auc(labels, base[0], "multi-class", np.ones(19))
    with pytest.raises(ValueError, match="non-negative"):
        stats.weighted_acc(labels, base[0], "multi-class", -np.ones(20))


def _diff(metric, mean, low, high, seeds=3):
    return stats.PairedDiff(metric, mean, low, high, 0.95, seeds, 100, 2000, (mean,) * seeds)


def test_describe_is_one_sentence():
    text = stats.describe("BreastMNIST", acc=_diff("acc", -0.003, -0.025, 0.019), auc=_diff("auc", 0.021, 0.004, 0.039))
    assert text == ("BreastMNIST: the booster raised AUC by 2.1 points (95% CI 0.4 to 3.9, 3 seeds) and changed ACC "
                    "by -0.3 points (CI -2.5 to 1.9, no clear difference).")
    worse = stats.describe("DermaMNIST", acc=_diff("acc", -0.05, -0.08, -0.02, 1), auc=_diff("auc", 0.0, 0.0, 0.0, 1))
    assert worse.startswith("DermaMNIST: ") and worse.endswith(".") and "\n" not in worse and ". " not in worse
    assert "changed ACC by -5.0 points (CI -8.0 to -2.0, too few seeds to call)" in worse  # 1 seed: no direction
    assert "1 seed," in worse and "AUC" in worse
    lowered = stats.describe("DermaMNIST", acc=_diff("acc", -0.05, -0.08, -0.02), auc=_diff("auc", 0.0, 0.0, 0.0))
    assert "lowered ACC by 5.0 points (CI -8.0 to -2.0)" in lowered  # the same interval at 3 seeds
