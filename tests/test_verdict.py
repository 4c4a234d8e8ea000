"""The verdict per task and comparison: Holm, the seeds estimate, the rules, and where the lines appear."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medboost_cli import stats
from medboost_cli.errors import MedboostError
from medboost_cli.report import make_report
from medboost_cli.stats import PairedDiff
from medboost_cli.studies import expand, load_study
from medboost_cli.verdict import (CONTROLS, Compared, VerdictSettings, holm, interval, judge, p_value, seeds_needed)

from .report_fixtures import fabricate
from .test_cli import assert_one_line_error, run

BASELINE = next(c for c in CONTROLS if c.variant == "none")


def test_holm_adjusts_a_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (never below the one before)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == pytest.approx([0.2]) and holm([]) == []
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_seeds_estimate_matches_a_hand_computation():
    # z(0.975) + z(0.8) = 1.959964 + 0.841621 = 2.801585; squared 7.84888
    assert seeds_needed([0.01, 0.03, 0.02], margin=0.01) == 8  # sd 0.01 = margin: 7.85 -> 8
    assert seeds_needed([0.0, 0.04], margin=0.01) == 63  # sd 0.0283: 7.84888 x 8 = 62.8 -> 63
    assert seeds_needed([0.0, 0.04], margin=0.02) == 16  # half the sd per margin: 15.7 -> 16
    assert seeds_needed([0.01, 0.03, 0.02], margin=0.01, alpha=0.01, power=0.9) == 15  # (2.5758 + 1.2816)^2 = 14.88
    assert seeds_needed([0.02, 0.02, 0.02], margin=0.01) == 2  # no variance: the smallest number that measures it
    assert seeds_needed([0.02], margin=0.01) is None  # one seed: cannot tell


def test_p_value_and_interval_agree_on_a_small_distribution():
    r = np.arange(-5, 95) / 100  # 100 replicates: 6 at or below 0, 95 at or above
    assert p_value(r) == pytest.approx(0.12)
    assert interval(r, 0.95) == pytest.approx((-0.03, 0.92))  # the 3rd smallest (3% at or below), its mirror
    assert interval(r, 0.885)[0] <= 0 < interval(r, 0.875)[0]  # excludes 0 once 1 - level exceeds p = 0.12
    assert p_value(np.zeros(50)) == 1.0 and p_value(np.full(50, 0.01)) == 0.0
    assert math.isnan(p_value([np.nan]))


def _diff(per_seed, replicates, n_boot=2000) -> PairedDiff:
    per_seed, replicates = np.asarray(per_seed, float), np.asarray(replicates, float)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return PairedDiff("auc", float(per_seed.mean()), float(low), float(high), 0.95, len(per_seed), 100, n_boot,
                      tuple(per_seed), replicates)


def _compared(diff, task="BreastMNIST", scope="control, --preset cpu", control=BASELINE) -> Compared:
    return Compared(scope, task, "ViT-mini", control, diff)


def test_rules_on_chosen_distributions():
    settings = VerdictSettings()
    spread = np.linspace(-1, 1, 2001)
    cases = {
        "helps": _diff([0.03, 0.04, 0.05], 0.04 + 0.005 * spread),
        "hurts": _diff([-0.03, -0.04, -0.05], -0.04 + 0.005 * spread),
        # narrow around 0, per-seed SD 0.1 points: 2 seeds suffice for a 1-point margin
        "no difference": _diff([0.000, 0.001, -0.001], 0.003 * spread),
        "inconclusive": _diff([0.02, -0.02, 0.0], 0.03 * spread),  # wide: within neither 0 nor the margin
    }
    for expected, diff in cases.items():
        (v,) = judge([_compared(diff)], settings)
        assert v.outcome == expected, (expected, v)
    narrow_but_few = _diff([0.008, -0.008], 0.008 * spread)  # within ±1 point, but sd 1.13 points: 7.85 x 1.28
    (v,) = judge([_compared(narrow_but_few)], settings)
    assert v.outcome == "inconclusive" and v.seeds == 11 and "about 11 seeds would resolve ±1 point " in v.line()
    (v,) = judge([_compared(narrow_but_few)], VerdictSettings(margin=3))  # a wider margin needs 2 seeds, but 2
    assert v.outcome == "inconclusive" and v.seeds == 2   # are below min_seeds: too few to resample
    (v,) = judge([_compared(narrow_but_few)], VerdictSettings(margin=3, min_seeds=2))
    assert v.outcome == "no difference" and v.seeds == 2


def test_one_seed_cannot_tell():
    one = _diff([0.10], np.full(500, 0.10))  # a large gain, but one seed: only test-image noise
    (v,) = judge([_compared(one)], VerdictSettings())
    assert v.outcome == "inconclusive" and v.seeds is None and math.isnan(v.p_holm)
    assert "is inconclusive at 1 seed" in v.line() and "one seed cannot tell" in v.line()


def test_holm_corrects_across_the_tasks_of_a_study_only():
    settings = VerdictSettings()
    weak = _diff([0.01, 0.02, 0.03], np.concatenate([np.full(2, -0.01), np.full(98, 0.02)]))  # p = 2 x 2% = 0.04
    assert p_value(weak.replicates) == pytest.approx(0.04)
    alone = judge([_compared(weak)], settings)
    assert alone[0].outcome == "helps" and alone[0].p_holm == pytest.approx(0.04)
    # beside a second task with the same p, each is tested at 0.05 / 2: neither helps
    two = judge([_compared(weak), _compared(weak, task="AdrenalMNIST3D")], settings)
    assert [v.outcome for v in two] == ["inconclusive", "inconclusive"]
    assert [v.p_holm for v in two] == pytest.approx([0.08, 0.08]) and two[0].level == pytest.approx(0.975)
    # another study, or another comparison, is another family: no correction between them
    apart = judge([_compared(weak), _compared(weak, scope="main2d, --preset cpu"),
                   _compared(weak, control=CONTROLS[1])], settings)
    assert [v.outcome for v in apart] == ["helps"] * 3


def _arms(quality: float, seeds: int, rng_seed: int = 0):
    """Binary labels and per-seed scores of a baseline and a booster arm; each seed has its own noise; the booster
    adds ``quality`` to the positives' scores (0: the same model quality, a different random draw)."""
    rng = np.random.default_rng(rng_seed)
    labels = rng.integers(0, 2, size=(300, 1))
    base, boost = [], []
    for _ in range(seeds):
        shared = rng.normal(size=300)
        for arm, gain in ((base, 0.0), (boost, quality)):
            logit = shared + 0.3 * rng.normal(size=300) + (1.0 + gain) * labels[:, 0]
            p = 1 / (1 + np.exp(-logit))
            arm.append(np.stack([1 - p, p], axis=1))
    return labels, base, boost


def _verdict_of(quality: float, seeds: int):
    labels, base, boost = _arms(quality, seeds)
    diff = stats.paired_bootstrap(labels, base, boost, "binary-class", "auc", n_boot=1000)
    (v,) = judge([_compared(diff)], VerdictSettings())
    return v


def test_a_booster_that_clearly_helps_is_called_helps():
    v = _verdict_of(quality=1.5, seeds=3)
    assert v.outcome == "helps" and v.low > 0 and "the pretrained layer helps at 3 seeds" in v.line()


def test_arms_of_equal_quality_make_no_difference_with_enough_seeds_and_are_inconclusive_with_two():
    assert _verdict_of(quality=0.0, seeds=2).outcome == "inconclusive"
    two = _verdict_of(quality=1.5, seeds=2)  # a clear gain, but 2 seeds are too few to resample
    assert two.outcome == "inconclusive" and "too few to resample, run at least 3" in two.line()
    many = _verdict_of(quality=0.0, seeds=30)
    assert many.outcome == "no difference", many.line()
    assert many.seeds <= 30 and -0.01 <= many.low and many.high <= 0.01


def test_identical_arms_make_no_difference():
    labels, base, _ = _arms(0.0, 3)
    diff = stats.paired_bootstrap(labels, base, [b.copy() for b in base], "binary-class", "auc", n_boot=200)
    (v,) = judge([_compared(diff)], VerdictSettings())
    assert v.outcome == "no difference" and v.p == 1.0 and (v.low, v.high) == (0.0, 0.0)


def test_settings_reject_bad_values_in_one_line():
    for bad in (dict(margin=0), dict(alpha=1.5), dict(power=0), dict(metric="f1")):
        with pytest.raises(MedboostError, match="^verdict ") as e:
            VerdictSettings(**bad)
        assert "\n" not in str(e.value)


def test_the_control_study_has_the_capacity_control_as_capacity_defines_it():
    control, capacity = load_study("control"), load_study("capacity")
    assert control.variants["mlp"] == capacity.variants["mlp"]
    assert ("mlp", "none") in control.comparisons() and ("rllm", "mlp") in control.comparisons()
    runs = expand(control, tasks=["breast"], seeds=1, preset="cpu")
    mlp = next(r for r in runs if r.variant == "mlp")
    assert mlp.recipe.booster.mode == "mlp" and mlp.command().startswith("medboost train breast --backbone vit-mini "
                                                                         "--booster mlp --seed 0")


@pytest.fixture(scope="module")
def control_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict")
    fabricate(root / "results", "control", tasks=["breast"], seeds=3, quality={"rllm": 3.0})
    written = make_report(root / "results", root / "out", ["markdown", "latex", "html"], n_boot=500)
    return root, written


def test_the_report_gives_one_verdict_line_per_task_and_comparison(control_report):
    root, written = control_report
    md = written["markdown"].read_text()
    section = md.split("## Verdict per task")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("- BreastMNIST (ViT-mini; control, ")]
    assert len(lines) == 4  # against none, mlp, random and shuffled
    # the pair none/rllm on BreastMNIST is main2d's too: that study gets its own verdict (its own Holm family)
    assert "- BreastMNIST (ViT-mini; main2d, --preset cpu), R-LLM vs the baseline (no booster): the pretrained " \
           "layer helps at 3 seeds" in section
    for control in CONTROLS:
        assert any(f"R-LLM vs {control.name}: the pretrained layer helps at 3 seeds" in line for line in lines)
    assert "Holm" in section and "±1 point" in section
    table = pd.read_csv(root / "out" / "verdict.csv")
    table = table[table["scope"] == "control, --preset cpu"]
    assert sorted(table["comparison"]) == sorted(f"rllm - {c.variant}" for c in CONTROLS)
    assert set(table["verdict"]) == {"helps"} and set(table["n"]) == {3} and set(table["setting_margin"]) == {1.0}
    assert "Verdict per task" in written["html"].read_text()
    assert "\\subsection*{Verdict per task}" in written["latex"].read_text()


def test_medboost_report_prints_the_verdict_lines_and_takes_a_margin(control_report, tmp_path):
    root, _ = control_report
    printed = run("report", "--results-dir", root / "results", "--out", tmp_path / "md", "--n-boot", "100")
    assert printed.returncode == 0 and "the pretrained layer helps at 3 seeds" in printed.stdout
    latex = run("report", "--latex", "--results-dir", root / "results", "--out", tmp_path / "tex", "--n-boot", "100",
                "--margin", "2")
    assert latex.returncode == 0 and "the pretrained layer helps at 3 seeds" in latex.stderr
    assert set(pd.read_csv(tmp_path / "tex" / "verdict.csv")["setting_margin"]) == {2.0}
    bad = run("report", "--results-dir", root / "results", "--out", tmp_path / "bad", "--margin", "-1")
    assert_one_line_error(bad, "margin")


def test_ablate_ends_with_the_verdict_lines(tmp_path):
    fabricate(tmp_path / "results", "control", tasks=["breast"], seeds=2, quality={"rllm": 3.0})
    result = run("ablate", "control", "--tasks", "breast", "--preset", "cpu", "--seeds", "2",
                 "--results-dir", tmp_path / "results", "--data-dir", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("verdict (AUC")[1].splitlines()
    assert sum("BreastMNIST (ViT-mini; control, --preset cpu), R-LLM vs" in line for line in lines) == 4
    assert all("at 2 seeds" in line for line in lines[1:] if line.strip())


def test_ablate_verdicts_name_the_overrides_of_the_runs(tmp_path):
    from medboost_cli.verdict import plan_verdicts

    sets = ["train.epochs=2"]
    fabricate(tmp_path, "main2d", tasks=["breast", "retina"], seeds=3, quality={"rllm": 3.0}, extra_sets=sets)
    study = load_study("main2d", "cpu")
    plan = expand(study, tasks=["breast", "retina"], seeds=3, preset="cpu", extra_sets=sets)
    verdicts = plan_verdicts(study, plan, tmp_path, VerdictSettings(n_boot=300))
    assert [v.compared.task for v in verdicts] == ["BreastMNIST", "RetinaMNIST"]  # one family of two tasks
    assert {v.compared.scope for v in verdicts} == {"main2d, --preset cpu --set train.epochs=2"}
    assert sorted(v.level for v in verdicts) == pytest.approx([0.95, 0.975])
    assert plan_verdicts(study, expand(study, tasks=["breast"], seeds=2, preset="cpu"), tmp_path) == []  # not run
