"""The CUDA paths, marked ``gpu`` (``pytest -m gpu``; benchmarks/gpu_check.sh runs them on a GPU): bf16 autocast
through a whole run, torch's fused AdamW, DDP over NCCL on one GPU under torchrun, and the one-layer loader onto
the device. Without CUDA each test runs the same code on the CPU (bf16 emulated where the CPU lacks it, gloo
instead of NCCL), so the suite exercises every path that a GPU run takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medboost_cli.bench_step import StepBench
from medboost_cli.engine import make_optimizer, train
from medboost_cli.models import build_model
from medboost_cli.recipes import load_recipe

from .conftest import TINY_SETS

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def recipe_on_device(*sets: str, mode: str = "rllm"):
    return load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", mode)],
                       sets=TINY_SETS + [f"train.device={DEVICE}", *sets])


def test_a_bf16_run_trains_and_scores_on_the_device(data_dir, results_dir):
    """bf16 autocast through a whole run on the device (emulated on a CPU without bf16): the row names the device
    and the precision, the metrics are numbers, and the run-level figure is measured in bf16."""
    row = train(recipe_on_device("train.precision=bf16"), data_dir, results_dir, log=lambda line: None)
    assert row["status"] == "completed" and row["precision"] == "bfloat16"
    assert row["memory_kind"] == ("gpu_allocated" if DEVICE == "cuda" else "process_rss")
    assert 0 <= row["test_auc"] <= 1 and row["peak_memory_mb"] > 0
    assert json.loads(row["run_cost_json"])["matmul_dtype"] == "bf16" and row["run_fraction_of_matmul"] > 0


def test_adamw_is_fused_on_the_device_and_steps_as_the_reference_loop():
    recipe = recipe_on_device(mode="none")
    device = torch.device(DEVICE)
    model = build_model(recipe, recipe.task_info, device).model
    reference = build_model(recipe, recipe.task_info, device).model
    fused = make_optimizer(model, recipe)
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW([{"params": [dict(reference.named_parameters())[n] for n, p in model.named_parameters()
                                          if any(p is q for q in g["params"])], "weight_decay": g["weight_decay"]}
                              for g in fused.param_groups], lr=recipe.train.lr, foreach=False)
    g = torch.Generator(device).manual_seed(0)
    for _ in range(3):
        for a, b in zip(model.parameters(), reference.parameters()):
            a.grad = torch.randn(a.shape, generator=g, device=device)
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ddp_over_the_devices_process_group_under_torchrun_steps_as_one_process(tmp_path):
    """torchrun on one process: NCCL on CUDA (gloo on CPU), the run's DDP wrapper, two training steps equal to
    those of the model alone (tests/gpu_ddp_child.py)."""
    out = tmp_path / "ddp.json"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                             str(ROOT / "tests" / "gpu_ddp_child.py"), DEVICE, str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["backend"] == ("nccl" if DEVICE == "cuda" else "gloo") and found["world_size"] == 1
    assert found["ddp"] and found["device"].startswith(DEVICE)
    assert found["max_diff"] <= 1e-6


def test_the_one_layer_loader_puts_the_frozen_layer_on_the_device_with_the_same_weights(tiny_llama):
    """A layer read from a checkpoint (sharded safetensors) onto the device: every frozen tensor there, and the
    hash of its weights that of the layer read onto the CPU."""
    folder, _ = tiny_llama
    recipe = recipe_on_device(f"booster.llm={folder}", "booster.layer=-1")
    on_device = build_model(recipe, recipe.task_info, torch.device(DEVICE))
    on_cpu = build_model(recipe, recipe.task_info, torch.device("cpu"))
    frozen = [p for p in on_device.model.booster.lm.parameters()]
    assert frozen and all(p.device.type == DEVICE and not p.requires_grad for p in frozen)
    assert on_device.frozen_sha256 == on_cpu.frozen_sha256
    step = StepBench.of(recipe)  # and the model with it trains a step there
    step.step()
    assert all(torch.isfinite(p).all() for p in step.model.parameters())
