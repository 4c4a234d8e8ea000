"""Benchmark code under benchmarks/ (not part of medboost): the step breakdown that profile_step.py prints, and the
reading of the rows `medboost bench` writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from medboost_cli.bench import bench_recipe
from medboost_cli.errors import MedboostError

from .conftest import TINY_SETS

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # its scripts import each other by name
from bench_rows import load_bench  # noqa: E402
from breakdown import step_breakdown  # noqa: E402


def test_the_step_breakdown_accounts_for_the_whole_step():
    """step_breakdown (benchmarks/breakdown.py) splits the R-LLM step into parts whose FLOPs add up to the whole step's (the optimizer
    and resize count none: no matmul), each with its floor at the given matmul rate; F_L's FLOPs are those of one
    MiniLM layer's forward and input gradient at the backbone's 50 tokens."""
    recipe = bench_recipe("breast", None, "minilm", 4, TINY_SETS[:5] + ["booster.mode=rllm"], preset="cpu")
    rows = step_breakdown(recipe, warmup=0, steps=1, matmul=2.0)
    by = {r["part"]: r for r in rows}
    assert list(by) == ["resize/augment", "backbone + head fwd/bwd", "F_L fwd + input grad", "F_E/F_D + loss",
                        "optimizer", "other", "step"]
    step = by["step"]
    parts = ["resize/augment", "backbone + head fwd/bwd", "F_L fwd + input grad", "F_E/F_D + loss", "optimizer"]
    assert sum(by[p]["gflop"] for p in parts) + by["other"]["gflop"] == pytest.approx(step["gflop"])
    assert abs(by["other"]["gflop"]) < 1e-3 * step["gflop"]  # nothing of the step's matrix work is left out
    assert by["F_E/F_D + loss"]["gflop"] > 0 and by["backbone + head fwd/bwd"]["gflop"] > 0
    # one BERT layer at 4 x 50 tokens: 6 matmuls of 384-wide tokens (q, k, v, o; 384->1536->384), forward 2 FLOPs
    # per multiply-add, and the input gradient the same again; attention's token-by-token products, each
    # 2 x 4 x 50 x 50 x 384 FLOPs: QK^T and AV forward, then backward dV, dP, dQ and dK, plus the scores recomputed
    # where torch's fused kernel runs (it keeps none); in bf16 on a CPU attention runs as the math path
    # (hardware.autocast), which keeps them
    from medboost_cli.hardware import autocast_dtype

    fused = autocast_dtype(recipe.train.precision, torch.device("cpu")) is None
    tokens, d, ff = 4 * 50, 384, 1536
    linear = 2 * tokens * (4 * d * d + 2 * d * ff)
    product = 2 * 4 * 50 * 50 * d
    backward = 5 if fused else 4
    assert by["F_L fwd + input grad"]["gflop"] * 1e9 == pytest.approx(2 * linear + (2 + backward) * product, rel=1e-6)
    for r in rows:
        assert r["floor_ms"] == pytest.approx(r["gflop"] * 1e9 / 2e12 * 1e3)
    assert step["ms"] > 0 and step["fraction_of_floor"] == pytest.approx(step["floor_ms"] / step["ms"])
    with pytest.raises(MedboostError, match="R-LLM step with a frozen layer"):
        step_breakdown(bench_recipe("breast", None, None, 4, ["booster.mode=none"], preset="cpu"), 0, 1, 2.0)


def test_bench_rows_read_in_file_order_and_a_damaged_one_is_one_error(tmp_path):
    from medboost_cli.results import write_bench_row

    assert load_bench(tmp_path).empty
    for stamp in ("20250102T000000", "20250101T000000"):
        write_bench_row(tmp_path, {"bench_id": f"{stamp}-breast-rllm", "booster": "rllm", "train_ms_median": 1.5})
    assert list(load_bench(tmp_path).bench_id) == ["20250101T000000-breast-rllm", "20250102T000000-breast-rllm"]
    (tmp_path / "bench" / "20250103T000000-breast-none.parquet").write_bytes(b"not parquet")
    with pytest.raises(MedboostError, match="not a readable Parquet bench row"):
        load_bench(tmp_path)


@pytest.mark.parametrize("task", ["breast", "derma", "retina", "adrenal3d"])
def test_the_task_budget_stand_in_has_the_tasks_real_split_sizes_and_loads(task, tmp_path):
    """benchmarks/task_budget.py measures a task's cost on a stand-in file: it must have the task's split sizes,
    layout and label range (medmnist's INFO), so that data.verify=false is the only thing it needs."""
    from medboost_cli.data import load_dataset
    from medboost_cli.tasks import resolve_task
    from task_budget import stand_in

    t = resolve_task(task)
    path = stand_in(task, tmp_path)
    data = load_dataset(t, 28, tmp_path, verify=False, select_metric="auc")
    assert path.name == t.filename(28)
    for split in ("train", "val", "test"):
        assert len(data.splits[split].labels) == t.n_samples[split]
