"""`medboost bench`: FLOP counting, the measured rows, and their Parquet records."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medboost_cli import bench
from medboost_cli.bench import bench_recipe, count_flops, run_bench
from medboost_cli.errors import MedboostError
from medboost_cli.results import load_bench

from .conftest import TINY_SETS


def test_flops_of_a_matmul_and_of_cpu_attention():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    q = torch.randn(1, 2, 10, 8)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 2 * 2 * 2 * 10 * 10 * 8


def test_matmul_rate_is_flops_over_the_best_trial(monkeypatch):
    """2 m k n FLOPs over the fastest of the trials' timings (timings stubbed: the real 2048x4096x4096 bf16
    products take minutes on a CPU without bf16 matrix units, and a rate is not something to assert)."""
    seconds = iter([0.5, 0.25, 1.0])
    monkeypatch.setattr(bench, "timed", lambda fn, device, warmup, steps: next(seconds))
    assert bench.matmul_tflops(torch.device("cpu"), trials=3) == 2 * 2048 * 4096 * 4096 / 0.25 / 1e12


def test_bench_measures_each_mode_and_writes_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "matmul_tflops", lambda device, dtype, shape=None: 2.0)  # the reference rate, measured above
    sets = [s for s in TINY_SETS if not s.startswith("train.batch_size")]
    recipe = bench_recipe("breast", None, "minilm", 4, sets, preset="cpu")
    rows = run_bench(recipe, ["none", "rllm"], warmup=1, steps=1, results_dir=tmp_path, label="breast",
                     log=lambda *a: None)
    none, rllm = rows
    assert (none["booster"], rllm["booster"]) == ("none", "rllm")
    for r in rows:
        assert r["train_ms_per_step"] > 0 and r["eval_images_per_second"] > 0 and r["matmul_tflops"] == 2.0
        assert r["train_images_per_second"] == pytest.approx(4 / (r["train_ms_per_step"] / 1e3))
        assert r["step_fraction_of_matmul"] == pytest.approx(r["step_tflops"] / 2.0)
        assert r["batch"] == 4 and r["input_size"] == 28 and r["tokens"] == 50
        assert r["matmul_dtype"] == r["precision"]  # the reference is measured in the precision the model runs in
    assert none["layer_tflops"] is None and rllm["layer_tflops"] > 0
    assert rllm["layer_fraction_of_matmul"] == pytest.approx(rllm["layer_tflops"] / 2.0)
    # the booster adds the frozen layer's parameters but few trainable ones, and its FLOPs
    assert rllm["params_total"] - none["params_total"] > 1.7e6
    assert rllm["params_trainable"] - none["params_trainable"] == 2 * 32 * 384
    assert rllm["gmacs_per_image"] > none["gmacs_per_image"]
    df = load_bench(tmp_path).set_index("booster")
    assert sorted(df.index) == ["none", "rllm"]
    for r in rows:  # the Parquet records hold the returned rows
        stored = df.loc[r["booster"]]
        assert (stored.bench_id, stored.params_total, stored.train_ms_per_step) == (
            r["bench_id"], r["params_total"], r["train_ms_per_step"])


def test_bench_arguments_are_checked():
    with pytest.raises(MedboostError, match="give a TASK or --shape"):
        bench_recipe(None, None, None, 8, [])
    with pytest.raises(MedboostError, match="--shape 5d: choose one of 2d-224, 3d-28"):
        bench_recipe(None, "5d", None, 8, [])
    r = bench_recipe(None, "2d-224", None, 8, [])
    assert (r.backbone.name, r.backbone.pretrained, r.booster.llm, r.train.batch_size) == (
        "vit-s", False, "random:llama-7b", 8)
