"""A verdict per task and comparison of a study: the pretrained layer helps, makes no difference, hurts, or is
inconclusive at the seeds run.

The booster arm (``ARM``, the study variant ``rllm``) is compared with each reference in ``CONTROLS`` that the
study has: the bare backbone (``none``), the capacity control (``mlp``: F_E and F_D without F_L) and the same
layer with random or shuffled weights (``rllm-random``, ``rllm-shuffled``). A comparison on one task and backbone
is the paired bootstrap of :mod:`medboost_cli.stats`: pairs are runs of the same task, backbone and seed; each
replicate resamples the seeds and the test images (the same images for both arms). The metric is
``VerdictSettings.metric`` (test AUC by default), differences in points (percent).

The rules (``RULES``, printed above every list of verdicts):

- p: two-sided, from the bootstrap distribution of the mean difference: twice the smaller of the shares of
  replicates at or below 0 and at or above 0, at most 1.
- Holm: for each comparison, the p-values of the study's tasks (and backbones) with at least two paired seeds
  form one family, adjusted with Holm's step-down method (statsmodels' ``multipletests``). The i-th smallest of
  m p-values is tested at alpha / (m - i + 1); its Holm interval is the percentile interval at level
  1 - alpha / (m - i + 1), which excludes 0 when its p is below that step's alpha.
- helps / hurts: Holm-adjusted p < alpha, the Holm interval above / below 0.
- no difference: otherwise, when the Holm interval lies within +-margin points and the seeds run are at least
  the seeds estimated to resolve the margin (a narrow interval from too few seeds claims nothing).
- inconclusive: everything else; always with one seed, whose interval holds only test-image noise.
- seeds to resolve a difference of margin points: n = ((z(1 - alpha/2) + z(power)) * sd / margin)^2, rounded
  up, at least 2, with sd the standard deviation of the per-seed paired differences (the normal approximation for
  a paired mean: an estimate; it leaves out the test images' noise, which the interval holds). One seed has no
  sd: it cannot tell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist

import numpy as np
import pandas as pd

from .errors import ConfigError
from .paper import TITLES
from .stats import MIN_SEEDS, PairedDiff, paired_bootstrap

ARM = "rllm"  # the study variant with the pretrained layer


@dataclass(frozen=True)
class Control:
    """A reference the booster arm is compared with: a study variant's key, and how a verdict line names it."""

    variant: str
    name: str


CONTROLS: tuple[Control, ...] = (
    Control("none", "the baseline (no booster)"),
    Control("mlp", "the capacity control (MLP: F_E and F_D without F_L)"),
    Control("rllm-random", "a random F_L"),
    Control("rllm-shuffled", "a shuffled F_L"),
)

# outcome -> how a line says it ("the pretrained layer helps at 3 seeds")
PHRASES = {"helps": "helps", "no difference": "makes no difference", "hurts": "hurts",
           "inconclusive": "is inconclusive"}

RULES = ("Verdict rules: p is two-sided from the bootstrap (twice the smaller share of replicates at or below and "
         "at or above 0); Holm's step-down adjusts the p-values of each comparison across the tasks and backbones "
         "of a study (those with at least {min_seeds} seeds); the i-th smallest of m gets the percentile interval "
         "at level 1 - alpha/(m - i + 1) (Holm CI). helps / hurts: Holm p below alpha, the Holm CI above / below 0. "
         "no difference: the Holm CI within ±{points} and at least the estimated seeds needed. inconclusive: "
         "otherwise, and always below {min_seeds} seeds (too few seeds to resample). Seeds needed to resolve "
         "±{points}: ((z(1 - alpha/2) + z(power)) sd / {margin:g})^2 with sd the per-seed differences' standard "
         "deviation, alpha {alpha:g}, power {power:g} (normal approximation: an estimate).")


@dataclass(frozen=True)
class VerdictSettings:
    """The verdict's knobs: the equivalence margin (points), alpha and power of the seeds estimate, the metric."""

    margin: float = 1.0
    alpha: float = 0.05
    power: float = 0.8
    metric: str = "auc"
    n_boot: int = 2000
    min_seeds: int = MIN_SEEDS  # fewer seeds are always inconclusive: a bootstrap over 2 seeds is too narrow

    def __post_init__(self):
        problems = [(self.margin > 0, f"margin {self.margin}: give a positive number of points"),
                    (0 < self.alpha < 1, f"alpha {self.alpha}: give a number between 0 and 1"),
                    (0 < self.power < 1, f"power {self.power}: give a number between 0 and 1"),
                    (self.metric in ("acc", "auc"), f"metric {self.metric!r}: use acc or auc"),
                    (self.n_boot >= 1, f"n_boot {self.n_boot}: give at least 1 replicate"),
                    (self.min_seeds >= 2, f"min_seeds {self.min_seeds}: give at least 2")]
        bad = next((text for ok, text in problems if not ok), None)
        if bad:
            raise ConfigError(f"verdict {bad}")

    def rules(self) -> str:
        return RULES.format(margin=self.margin, points=points(self.margin), alpha=self.alpha, power=self.power,
                            min_seeds=self.min_seeds)


def points(x: float) -> str:
    """``x`` percentage points in words: "1 point", "0.5 points"."""
    return f"{x:g} point" + ("" if x == 1 else "s")


def p_value(replicates) -> float:
    """Two-sided bootstrap p-value of "the mean difference is 0": twice the smaller share of replicates at or below
    and at or above 0, at most 1 (NaN without any finite replicate)."""
    r = np.asarray(replicates, dtype=float)
    r = r[~np.isnan(r)]
    if not len(r):
        return math.nan
    return float(min(1.0, 2 * min(np.mean(r <= 0), np.mean(r >= 0))))


def interval(replicates, level: float) -> tuple[float, float]:
    """Percentile interval at ``level``: the lower end is the smallest replicate with at least (1 - level)/2 of
    them at or below it, the upper end its mirror image, so the interval excludes 0 when p < 1 - level."""
    r = np.asarray(replicates, dtype=float)
    r = r[~np.isnan(r)]
    if not len(r):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return (float(np.quantile(r, tail, method="inverted_cdf")),
            float(-np.quantile(-r, tail, method="inverted_cdf")))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (statsmodels' ``multipletests``, method "holm")."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(np.asarray(pvalues, dtype=float), method="holm")[1]]


def seeds_needed(per_seed, margin: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Seeds that would resolve a paired difference of ``margin`` (the unit of ``per_seed``) with a two-sided test
    at ``alpha`` and the given power: ((z(1 - alpha/2) + z(power)) * sd / margin)^2, rounded up, at least 2 (the
    normal approximation: an estimate). None for fewer than two seeds: no per-seed variance to go on."""
    if len(per_seed) < 2:
        return None
    sd = float(np.std(per_seed, ddof=1))
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil((z * sd / margin) ** 2))


@dataclass(frozen=True)
class Compared:
    """One comparison on one task and backbone: the booster arm minus ``control``'s variant."""

    scope: str  # the study and its configuration: the Holm family is one scope and control
    task: str  # display names
    backbone: str
    control: Control
    diff: PairedDiff


@dataclass(frozen=True)
class Verdict:
    """What a comparison shows under the rules (``RULES``), with the numbers its line and verdict.csv give."""

    compared: Compared
    outcome: str  # a key of PHRASES
    p: float
    p_holm: float  # NaN: not tested (one seed)
    level: float  # the level of the interval [low, high]: Holm's step for the tested, 1 - alpha otherwise
    low: float
    high: float
    seeds: int | None  # the estimated seeds to resolve the margin; None: cannot tell
    settings: VerdictSettings

    def line(self) -> str:
        c, d = self.compared, self.compared.diff
        n = f"{d.n_seeds} seed{'s' if d.n_seeds != 1 else ''}"
        head = (f"{c.task} ({c.backbone}; {c.scope}), R-LLM vs {c.control.name}: the pretrained layer "
                f"{PHRASES[self.outcome]} at {n}")
        change = f"{d.metric.upper()} {100 * d.mean_diff:+.2f} points"
        if d.n_seeds < 2:
            return (f"{head} ({change}; one seed cannot tell: its interval holds only test-image noise, and there "
                    f"is no per-seed variance to estimate the seeds needed).")
        if d.n_seeds < self.settings.min_seeds:
            change += f"; {n} are too few to resample, run at least {self.settings.min_seeds}"
        ci = f"Holm {100 * self.level:.3g}% CI {100 * self.low:+.2f} to {100 * self.high:+.2f}"
        ps = f"p {_p_text(self.p, d.n_boot)}, Holm p {_p_text(self.p_holm, d.n_boot)}"
        sd = 100 * float(np.std(d.per_seed_diffs, ddof=1))
        seeds = (f"about {self.seeds} seeds would resolve ±{points(self.settings.margin)} (an estimate from the "
                 f"per-seed SD {sd:.2f} points)")
        return f"{head} ({change}, {ci}, {ps}; {seeds})."

    def record(self) -> dict:
        """One row of verdict.csv (``CSV_COLUMNS``, then the settings)."""
        c, d = self.compared, self.compared.diff
        return {"scope": c.scope, "task": c.task, "backbone": c.backbone, "comparison": f"{ARM} - {c.control.variant}",
                "metric": d.metric, "n": d.n_seeds, "mean": round(100 * d.mean_diff, 4),
                "level": round(self.level, 6), "low": round(100 * self.low, 4), "high": round(100 * self.high, 4),
                "p": self.p, "p_holm": self.p_holm, "verdict": self.outcome, "seeds_needed": self.seeds,
                **{f"setting_{k}": v for k, v in asdict(self.settings).items()}}


CSV_COLUMNS = ["scope", "task", "backbone", "comparison", "metric", "n", "mean", "level", "low", "high", "p", "p_holm",
               "verdict", "seeds_needed"]


def _p_text(p: float, n_boot: int) -> str:
    if math.isnan(p):
        return "n/a"
    return f"below {2 / n_boot:.2g}" if p == 0 else f"= {p:.3g}"  # 2/n_boot: the smallest p the replicates resolve


def judge(items: list[Compared], settings: VerdictSettings) -> list[Verdict]:
    """A verdict for each comparison, Holm-adjusted within each (scope, control) family; in the order given."""
    families: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(items):
        if c.diff.n_seeds >= settings.min_seeds and not math.isnan(p_value(c.diff.replicates)):
            families.setdefault((c.scope, c.control.variant), []).append(i)
    steps: dict[int, tuple[float, int]] = {}  # item -> (Holm-adjusted p, Holm's divisor m - i + 1)
    for members in families.values():
        ps = [p_value(items[i].diff.replicates) for i in members]
        adjusted = holm(ps)
        for rank, j in enumerate(np.argsort(ps, kind="stable")):
            steps[members[j]] = (adjusted[j], len(members) - rank)
    return [_verdict(c, steps.get(i), settings) for i, c in enumerate(items)]


def _verdict(c: Compared, step: tuple[float, int] | None, settings: VerdictSettings) -> Verdict:
    d = c.diff
    p = p_value(d.replicates)
    needed = seeds_needed(d.per_seed_diffs, settings.margin / 100, settings.alpha, settings.power)
    if step is None:  # too few seeds, or no replicate with both classes: nothing to test
        low, high = interval(d.replicates, 1 - settings.alpha)
        return Verdict(c, "inconclusive", p, math.nan, 1 - settings.alpha, low, high, needed, settings)
    p_holm, divisor = step
    level = 1 - settings.alpha / divisor
    low, high = interval(d.replicates, level)
    margin = settings.margin / 100
    if p_holm < settings.alpha and low > 0:
        outcome = "helps"
    elif p_holm < settings.alpha and high < 0:
        outcome = "hurts"
    elif -margin <= low and high <= margin and needed is not None and d.n_seeds >= needed:
        outcome = "no difference"
    else:
        outcome = "inconclusive"
    return Verdict(c, outcome, p, p_holm, level, low, high, needed, settings)


def compare(arm: pd.DataFrame, reference: pd.DataFrame, task: str, settings: VerdictSettings,
            cache: dict | None = None) -> PairedDiff | None:
    """The paired bootstrap of ``arm``'s runs minus ``reference``'s (rows with run_id, seed, test_labels and
    test_scores) over their common seeds; None without one. ``cache`` (keyed by the run ids and the metric, as
    the report's pairs are) saves recomputing a pair already done."""
    if not (len(arm) and len(reference)):
        return None
    seeds = sorted(set(arm["seed"]) & set(reference["seed"]))
    if not seeds:
        return None
    a, b = arm.set_index("seed").loc[seeds], reference.set_index("seed").loc[seeds]
    key = (tuple(sorted(a["run_id"]) + sorted(b["run_id"])), settings.metric)
    cache = {} if cache is None else cache
    if key not in cache:
        from .tasks import resolve_task

        labels = np.array(a["test_labels"].iloc[0].tolist())
        base = [np.array(s.tolist()) for s in b["test_scores"]]
        boost = [np.array(s.tolist()) for s in a["test_scores"]]
        cache[key] = paired_bootstrap(labels, base, boost, resolve_task(task).task_type, settings.metric,
                                      n_boot=settings.n_boot)
    return cache[key]


def report_verdicts(configs: list, pairs: list, settings: VerdictSettings) -> list[Verdict]:
    """The verdicts of every study configuration of a report (``report.gather.Config``) that has the booster arm;
    ``pairs`` (the report's ``Pair`` list) are reused rather than bootstrapped again."""
    cache = {(tuple(p.run_ids), metric): getattr(p, metric) for p in pairs for metric in ("acc", "auc")}
    items = []
    for config in configs:
        variants = set(config.study.all_variants())
        if not config.has_results or ARM not in variants:
            continue
        scope = f"{config.study.name}, {config.label}"
        for task, backbone in dict.fromkeys((t, b) for t, b, _ in config.cells):
            for control in (c for c in CONTROLS if c.variant in variants):
                diff = compare(config.cell(task, backbone, ARM).runs,
                               config.cell(task, backbone, control.variant).runs, task, settings, cache)
                if diff is not None:
                    items.append(Compared(scope, TITLES.get(task, task), config.backbone_title(backbone), control,
                                          diff))
    return judge(items, settings)


def plan_verdicts(study, plan: list, results_dir, settings: VerdictSettings | None = None) -> list[Verdict]:
    """The verdicts of the planned runs of ``study`` (``studies.expand``) that are completed in ``results_dir``:
    what ``medboost ablate`` prints at its end. The Holm family is the plan's tasks."""
    from .report.gather import backbone_title
    from .results import load_results

    settings = settings or VerdictSettings()
    variants = set(study.all_variants())
    if ARM not in variants or not plan:
        return []
    df = load_results(results_dir, columns=["run_id", "seed", "test_labels", "test_scores"], status="completed")
    runs: dict[tuple[str, str, str], list[str]] = {}
    specs = {}
    for run in plan:
        runs.setdefault((run.task, run.backbone, run.variant), []).append(run.run_id)
        specs[run.backbone] = run.recipe.backbone
    preset, shared = plan[0].preset, set(plan[0].sets).intersection(*(r.sets for r in plan))
    label = [f"--preset {preset}" if preset else "paper recipes"] + [f"--set {s}" for s in plan[0].sets if s in shared]
    scope = f"{study.name}, {' '.join(label)}"  # as the report labels a configuration (its overrides included)
    items = []
    for task, backbone in dict.fromkeys((t, b) for t, b, _ in runs):
        rows = {v: df[df["run_id"].isin(runs.get((task, backbone, v), []))] for v in variants}
        for control in (c for c in CONTROLS if c.variant in variants):
            diff = compare(rows[ARM], rows[control.variant], task, settings)
            if diff is not None:
                items.append(Compared(scope, TITLES.get(task, task), backbone_title(backbone, specs[backbone]),
                                      control, diff))
    return judge(items, settings)


def write_verdicts(verdicts: list[Verdict], path) -> None:
    """verdict.csv: one row per verdict with its numbers and settings, with its header even when it has no row."""
    from .fileio import write_csv

    columns = CSV_COLUMNS + [f"setting_{f.name}" for f in fields(VerdictSettings)]
    write_csv(pd.DataFrame([v.record() for v in verdicts], columns=columns), path, index=False)
