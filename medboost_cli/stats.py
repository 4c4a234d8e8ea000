"""Does the booster help? Paired bootstrap confidence intervals for booster-minus-baseline ACC and AUC.

A booster run and its baseline run are *paired*: same task, same seed, same test set (the same labels in the
same order); only the booster differs. For each seed ``s`` the difference ``d_s = metric(boost_s) -
metric(base_s)`` is computed with the MedMNIST conventions of :mod:`medboost_cli.metrics`, and the point
estimate is the mean of ``d_s`` over seeds.

Method (paired, two-level bootstrap). Each of ``n_boot`` replicates (i) resamples the seeds with replacement
and (ii) resamples the test samples with replacement, drawing ONE set of sample indices that is used for both
arms of every pair and for all seeds in that replicate, so that the difficulty of each test sample is shared by
the booster and the baseline (this is what makes the comparison paired and the interval narrow where the arms
agree). The replicate value is the mean, over the resampled seeds, of the per-seed difference computed on the
resampled test set. The confidence interval is the percentile interval of the replicate values (2.5th and
97.5th percentiles for 95%). It therefore reflects both test-set sampling noise and seed-to-seed training
noise; with a single seed only the test samples are resampled. A difference is called "better" / "worse"
when the interval lies entirely above / below zero, and "no clear difference" otherwise.

Resampling the test set is implemented with per-sample weights: a replicate is a vector of integer
multiplicities (how often each sample was drawn), and :func:`weighted_acc` / :func:`weighted_auc` compute the
metric on the weighted sample, which equals the metric on the explicitly repeated samples (tested). AUC uses
the Mann-Whitney rank formula with ties counted 1/2: in each score column the smaller of the two classes is
sorted once; for every replicate a cumulative sum of its weights in score order gives, for each sample of the
other class, the weight below it (ties 1/2), and a sparse matrix sums the other class's weights by position, all
vectorised over chunks of replicates (R=2000, N=20,000, K=11 takes about 1-2 s on one core; timed by
benchmarks/bootstrap_auc.py). A class (or label) with no positive or no negative weight in a replicate is left
out of that replicate's AUC mean, as :func:`medboost_cli.metrics.auc` does for an absent class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from . import metrics
from .metrics import BINARY, MULTILABEL

# Replicates x samples per chunk: keeps each float64 work array near 16 MB (under ~150 MB in all).
_CHUNK_ELEMENTS = 2_000_000


def _as_2d(a) -> np.ndarray:
    a = np.asarray(a)
    return a[:, None] if a.ndim == 1 else a


def _columns(y_true, y_score, task_type: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(is-positive mask, scores) for each AUC column, with the conventions of ``metrics.auc``."""
    y, s = _as_2d(y_true), _as_2d(y_score)
    if task_type == MULTILABEL:
        return [(y[:, i] > 0, s[:, i]) for i in range(s.shape[1])]
    if task_type == BINARY:
        return [(y[:, 0] > 0, s[:, -1])]
    return [(y[:, 0] == i, s[:, i]) for i in range(s.shape[1])]


def _auc_plan(y_true, y_score, task_type: str) -> list[tuple]:
    """Per AUC column: the smaller class sorted by score (the one sort), and a sparse matrix that sums the weights
    of the other class by where each of its samples falls among them (once at the left, once at the right end
    of its ties)."""
    plan = []
    for positive, s in _columns(y_true, y_score, task_type):
        pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
        flip = len(pos) < len(neg)  # cumulate over the smaller class; the other one goes through the sparse sum
        small, large = (pos, neg) if flip else (neg, pos)
        order = small[np.argsort(s[small], kind="stable")]
        left = np.searchsorted(s[order], s[large], side="left")  # small-class samples strictly below
        right = np.searchsorted(s[order], s[large], side="right")  # ... plus those tied with it
        place = sparse.csr_matrix((np.ones(2 * len(large)), (np.concatenate([left, right]), np.tile(large, 2))),
                                  shape=(len(order) + 1, len(s)))
        place.sum_duplicates()
        plan.append((order, place, flip))
    return plan


def _auc_apply(plan: list[tuple], wt: np.ndarray) -> np.ndarray:
    """Mean AUC over columns for each replicate; ``wt`` is (N, c) float weights, one column per replicate.

    With ``C[k]`` the weight of the k lowest-scored small-class samples, ``sum_l w_l (C[left_l] + C[right_l]) / 2``
    over the other class is the Mann-Whitney count of (other > small) pairs with ties counted 1/2."""
    total, count = np.zeros(wt.shape[1]), np.zeros(wt.shape[1])
    for order, place, flip in plan:
        cum = np.empty((len(order) + 1, wt.shape[1]))
        cum[0] = 0.0
        np.cumsum(wt[order], axis=0, out=cum[1:])
        grouped = place @ wt  # (len(order) + 1, c): other-class weight by position among the small class
        above = 0.5 * np.einsum("ij,ij->j", cum, grouped)
        pairs = cum[-1] * (0.5 * grouped.sum(axis=0))  # small-class weight x other-class weight
        ok = pairs > 0
        u = pairs - above if flip else above  # positive-above-negative pairs, ties 1/2
        total[ok] += u[ok] / pairs[ok]
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count  # NaN where no column had both positives and negatives


def _correct(y_true, y_score, task_type: str, threshold: float = 0.5) -> np.ndarray:
    """Per-sample accuracy (for multi-label: the fraction of labels right), as ``metrics.acc`` averages it."""
    y, s = _as_2d(y_true), _as_2d(y_score)
    if task_type == MULTILABEL:
        return ((s > threshold) == (y > 0)).mean(axis=1)
    if task_type == BINARY:
        return ((s[:, -1] > threshold) == (y[:, 0] > 0)).astype(float)
    return (s.argmax(axis=1) == y[:, 0]).astype(float)


def _check_weights(weights, n: int) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim not in (1, 2) or w.shape[-1] != n:
        raise ValueError(f"weights must have shape (N,) or (R, N) with N = {n}, got {w.shape}")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    return w


def weighted_acc(y_true, y_score, task_type: str, weights, threshold: float = 0.5):
    """``metrics.acc`` with per-sample weights; (R, N) weights give an array of R values, (N,) a float."""
    correct = _correct(y_true, y_score, task_type, threshold)
    w = _check_weights(weights, len(correct))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w @ correct) / w.sum(axis=-1)
    return float(out) if w.ndim == 1 else out


def weighted_auc(y_true, y_score, task_type: str, weights):
    """``metrics.auc`` with per-sample weights; (R, N) weights give an array of R values, (N,) a float."""
    plan = _auc_plan(y_true, y_score, task_type)
    n = len(_as_2d(y_score))
    w = _check_weights(weights, n)
    w2 = w[None] if w.ndim == 1 else w
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    out = np.concatenate([_auc_apply(plan, np.ascontiguousarray(w2[r:r + step].T, dtype=float))
                          for r in range(0, len(w2), step)]) if len(w2) else np.empty(0)
    return float(out[0]) if w.ndim == 1 else out


# Below this many seeds a difference is described, never called better or worse: one seed's interval holds only
# the test images' noise, and a bootstrap over two seeds resamples two numbers (verdict.py uses the same bound).
MIN_SEEDS = 3


@dataclass(frozen=True)
class PairedDiff:
    """Booster minus baseline for one metric (fractions, not points), with a paired bootstrap interval."""

    metric: str
    mean_diff: float
    ci_low: float
    ci_high: float
    ci_level: float
    n_seeds: int
    n_samples: int
    n_boot: int
    per_seed_diffs: tuple[float, ...]
    # the finite bootstrap replicates of the mean difference, for p-values and intervals at other levels (verdict)
    replicates: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    @property
    def includes_zero(self) -> bool:
        return self.ci_low <= 0.0 <= self.ci_high

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return "better"
        if self.ci_high < 0:
            return "worse"
        return "no clear difference"


def _check_arms(labels, base_scores, boost_scores) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    labels = _as_2d(labels)
    base, boost = [_as_2d(s) for s in base_scores], [_as_2d(s) for s in boost_scores]
    if len(base) != len(boost):
        raise ValueError(f"the arms have different numbers of seeds: {len(base)} baseline vs {len(boost)} booster")
    if not base:
        raise ValueError("no seeds: base_scores and boost_scores are empty")
    shape = base[0].shape
    for arm, runs in (("baseline", base), ("booster", boost)):
        for i, s in enumerate(runs):
            if s.shape != shape:
                raise ValueError(f"{arm} scores of seed #{i} have shape {s.shape}, expected {shape}")
    if shape[0] == 0:
        raise ValueError("no test samples: the scores are empty")
    if shape[0] != len(labels):
        raise ValueError(f"scores have {shape[0]} samples but labels have {len(labels)}")
    return labels, base, boost


def paired_bootstrap(labels, base_scores, boost_scores, task_type: str, metric: str, n_boot: int = 2000,
                     ci: float = 0.95, seed: int = 0) -> PairedDiff:
    """Mean booster-minus-baseline difference of ``metric`` ("acc" or "auc") over paired seeds, with a paired
    bootstrap percentile interval (see the module docstring). ``base_scores[i]`` and ``boost_scores[i]`` are the
    (N, K) test scores of the same seed; ``labels`` is the shared (N, L) label array."""
    labels, base, boost = _check_arms(labels, base_scores, boost_scores)
    metric = metric.lower()
    if metric not in ("acc", "auc"):
        raise ValueError(f"metric must be 'acc' or 'auc', got {metric!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")

    reference = metrics.auc if metric == "auc" else metrics.acc
    per_seed = [reference(labels, b, task_type) - reference(labels, a, task_type) for a, b in zip(base, boost)]

    if metric == "auc":
        prepared = [(_auc_plan(labels, a, task_type), _auc_plan(labels, b, task_type)) for a, b in zip(base, boost)]
        evaluate = _auc_apply
    else:
        prepared = [(_correct(labels, a, task_type), _correct(labels, b, task_type)) for a, b in zip(base, boost)]
        evaluate = lambda correct, wt: (correct @ wt) / wt.sum(axis=0)  # noqa: E731

    rng = np.random.default_rng(seed)
    n, n_seeds = len(labels), len(base)
    step = max(1, _CHUNK_ELEMENTS // n)
    replicates = np.empty(n_boot)
    for r in range(0, n_boot, step):
        c = min(step, n_boot - r)
        draws = rng.integers(0, n, size=(c, n))  # the same sample indices for both arms and all seeds
        wt = np.bincount((draws * c + np.arange(c)[:, None]).ravel(), minlength=n * c).reshape(n, c).astype(float)
        seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=c) if n_seeds > 1 \
            else np.ones((c, 1), dtype=int)
        with np.errstate(invalid="ignore", divide="ignore"):
            diffs = np.stack([evaluate(pb, wt) - evaluate(pa, wt) for pa, pb in prepared], axis=1)  # (c, seeds)
        replicates[r:r + c] = np.where(seed_counts > 0, seed_counts * diffs, 0.0).sum(axis=1) / n_seeds

    finite = replicates[~np.isnan(replicates)]  # NaN only when a resample leaves no class with both outcomes
    tail = 100 * (1 - ci) / 2
    low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
    return PairedDiff(metric=metric, mean_diff=float(np.mean(per_seed)), ci_low=float(low), ci_high=float(high),
                      ci_level=ci, n_seeds=n_seeds, n_samples=n, n_boot=n_boot,
                      per_seed_diffs=tuple(float(d) for d in per_seed), replicates=finite)


def _phrase(d: PairedDiff, level: str, extra: str) -> str:
    name, points, low, high = d.metric.upper(), 100 * d.mean_diff, 100 * d.ci_low, 100 * d.ci_high
    interval = f"({level}CI {low:.1f} to {high:.1f}{extra}"
    if d.n_seeds < MIN_SEEDS:  # the interval cannot hold the seed-to-seed noise: no direction is claimed
        return f"changed {name} by {points:.1f} points {interval}, too few seeds to call)"
    if d.verdict == "better":
        return f"raised {name} by {points:.1f} points {interval})"
    if d.verdict == "worse":
        return f"lowered {name} by {-points:.1f} points {interval})"
    return f"changed {name} by {points:.1f} points {interval}, no clear difference)"


def describe(task_label: str, acc: PairedDiff, auc: PairedDiff) -> str:
    """One plain-English sentence: did the booster help on this task? Differences in percentage points."""
    seeds = f", {auc.n_seeds} seed{'s' if auc.n_seeds != 1 else ''}"
    first = _phrase(auc, f"{100 * auc.ci_level:g}% ", seeds)
    second = _phrase(acc, "" if acc.ci_level == auc.ci_level else f"{100 * acc.ci_level:g}% ", "")
    return f"{task_label}: the booster {first} and {second}."

