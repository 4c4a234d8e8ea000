"""The run-level efficiency (run_cost.py): a run's FLOPs over its wall time at the matmul rate of its process,
printed at the end of every run and stored in its row, with the wall time by part; ``medboost bench --run``."""

from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from medboost_cli import run_cost
from medboost_cli.bench_step import StepBench
from medboost_cli.bench_timing import count_flops, matmul_tflops_within
from medboost_cli.cli import app
from medboost_cli.engine import train
from medboost_cli.hardware import autocast
from medboost_cli.recipes import load_recipe
from medboost_cli.results import read_row

from .conftest import TINY_SETS


def test_a_run_stores_and_prints_its_flops_its_wall_time_by_part_and_its_fraction_of_the_matmul_rate(
        data_dir, results_dir):
    """48 train samples at batch 16 for 2 epochs: 6 steps of one shape, each the FLOPs of bench's step at that
    shape; 2 val passes over 16 samples and a test pass over 24, each a forward whose FLOPs are linear in the
    samples (to the few FLOPs of composing the augmentation maps). The parts add up to the wall time, and the
    fraction is the FLOPs over wall time x matmul rate."""
    recipe = load_recipe("breast", preset="cpu", sets=TINY_SETS)
    lines: list[str] = []
    row = train(recipe, data_dir, results_dir, log=lines.append)
    figures = json.loads(row["run_cost_json"])
    step = StepBench.of(recipe)
    step.model.train()
    step_flops = count_flops(step.step)
    step.model.eval()

    @torch.no_grad()
    def forward():
        with autocast(step.device, step.amp):
            step.model(step.eval_tf(step.images[:8]))

    per_sample = count_flops(forward) / 8
    assert figures["train_steps"] == 6 and figures["eval_passes"] == 3
    # bench's step draws its augmentation maps inside the step (a few small matmuls); the loop draws them before
    assert figures["flops"]["train"] == pytest.approx(6 * step_flops, rel=1e-6)
    assert figures["flops"]["eval"] == pytest.approx((2 * 16 + 24) * per_sample, rel=1e-9)
    assert row["run_flops"] == figures["total_flops"] == figures["flops"]["train"] + figures["flops"]["eval"]
    seconds = figures["seconds"]
    assert list(seconds) == [*run_cost.PARTS, "other"] and min(seconds.values()) >= 0
    assert sum(seconds.values()) == pytest.approx(figures["wall_seconds"])
    assert seconds["train"] > 0 and seconds["eval"] > 0 and seconds["checkpoints"] > 0 and seconds["row"] > 0
    assert figures["matmul_tflops"] > 0 and figures["matmul_dtype"] in ("bf16", "fp32")
    assert row["run_fraction_of_matmul"] == pytest.approx(
        row["run_flops"] / (figures["wall_seconds"] * figures["matmul_tflops"] * 1e12))
    assert 0 < row["run_fraction_of_matmul"] < 1
    assert run_cost.row_line(row) == run_cost.summary_line(figures) and not lines  # the caller shows it
    stored = read_row(results_dir, row["run_id"])  # the written row holds the same figures
    assert stored["run_flops"] == row["run_flops"] and stored["run_cost_json"] == row["run_cost_json"]


def test_the_first_run_of_a_process_counts_its_start_up_and_a_later_one_starts_at_its_own_call(monkeypatch):
    monkeypatch.setattr(run_cost, "_process_counted", False)
    first = run_cost.RunCost()
    assert first.began == pytest.approx(run_cost.process_start(), abs=0.02)
    assert first.seconds["startup"] == pytest.approx(time.time() - run_cost.process_start(), abs=0.5)
    second = run_cost.RunCost()
    assert second.seconds["startup"] < 0.05 and second.elapsed() < 0.05


def test_flops_are_counted_once_per_shape_and_added_for_every_step():
    cost = run_cost.RunCost(began=time.time())
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    calls = []

    def step():
        calls.append(1)
        return a @ b

    for _ in range(3):
        cost.train_step(8, step)
    cost.train_step(5, lambda: a[:5] @ b)
    assert cost.flops["train"] == 3 * (2 * 8 * 16 * 4) + 2 * 5 * 16 * 4 and len(calls) == 3
    assert cost.counts["train_steps"] == 4


def test_the_reference_matmul_keeps_to_its_budget():
    start = time.perf_counter()
    rate = matmul_tflops_within(torch.device("cpu"), torch.float32, 0.05, shape=(64, 64, 64))
    assert rate > 0 and time.perf_counter() - start < 1.0


def test_bench_run_trains_the_recipe_once_and_prints_its_breakdown(data_dir, tmp_path):
    out = tmp_path / "results"
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    result = CliRunner().invoke(app, ["bench", "--run", "breast", "--preset", "cpu", *sets,
                                      "--data-dir", str(data_dir), "--results-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "run efficiency: " in result.output
    for part in ("start-up and imports", "data loading", "training steps", "evaluation", "checkpoints",
                 "writing the row", "whole run"):
        assert part in result.output
    (bench,) = (out / "bench").glob("*-breast-run.parquet")
    assert not (out / "runs").exists()  # the run itself trained in a temporary folder
    import pandas as pd

    row = pd.read_parquet(bench).iloc[0]
    assert row["run_flops"] > 0 and json.loads(row["run_cost_json"])["train_steps"] == 6


def test_counting_flops_leaves_the_runs_numbers_unchanged(data_dir, tmp_path, monkeypatch):
    """The same run with FLOPs counted (on its first step of each shape and first pass of each split) and with
    nothing counted: the same losses and test scores, bit for bit."""
    recipe = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "rllm")], sets=TINY_SETS)
    counted = train(recipe, data_dir, tmp_path / "counted", log=lambda line: None)
    monkeypatch.setattr(run_cost, "_counted", lambda fn: (fn(), 0))
    plain = train(recipe, data_dir, tmp_path / "plain", log=lambda line: None)
    assert plain["run_flops"] == 0 < counted["run_flops"]
    assert plain["test_scores"] == counted["test_scores"]
    losses = [[e["train_loss"], e["val_loss"]] for e in json.loads(plain["history_json"])]
    assert losses == [[e["train_loss"], e["val_loss"]] for e in json.loads(counted["history_json"])]


def test_medboost_train_prints_the_runs_line_with_its_result(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["train", "breast", "--preset", "cpu", "--quiet",
                                      *sum((["--set", s] for s in TINY_SETS), []), "--data-dir", str(data_dir),
                                      "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("run efficiency: ")]
    assert "% of the" in line and "training steps" in line
