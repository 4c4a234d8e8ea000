"""What the booster costs: train-step and eval throughput, memory, parameters and FLOPs per booster mode.

For each mode the real training step (``engine.train_step``: batched resize/augment on the device, autocast,
backward, AdamW) runs on a synthetic uint8 batch; after warm-up steps, the timed steps give ms/step and
images/s. FLOPs are counted by ``torch.utils.flop_counter`` on the executed ops (frozen weights get no weight
gradient, so none is counted). Two utilisation figures are reported against a matmul rate, in the precision the
model runs in (bf16 where the device has it, else fp32), measured in the
same run on the same device: the whole train step's, and the frozen LM layer's alone (forward + backward to its
input, at the batch's token shape).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils import flop_counter

from .engine import make_optimizer, make_transforms, prepare_runner, train_step
from .errors import ConfigError
from .hardware import autocast, autocast_dtype, device_name, resolve_device, set_threads
from .models import build_model, count_parameters
from .recipes import Recipe, load_recipe
from .results import git_commit, package_versions, write_bench_row

# Shapes of the paper's two settings, for `medboost bench --shape`.
SHAPES = {
    "2d-224": {"task": "breast", "sets": ["backbone.pretrained=false"], "llm": "random:llama-7b"},
    "3d-28": {"task": "adrenal3d", "sets": [], "llm": "random:llama-7b"},
}


def _register_cpu_sdpa_flops() -> None:
    """flop_counter knows the CUDA attention kernels but not the CPU flash kernel that SDPA uses on CPU."""
    aten = torch.ops.aten
    try:
        @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
        def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

        @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
        def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    except (AttributeError, RuntimeError, ValueError):  # already known to torch, or no such kernel
        pass


_register_cpu_sdpa_flops()


def count_flops(fn) -> int:
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


MATMUL_SHAPES = {"cpu": (2048, 4096, 4096), "cuda": (8192, 8192, 8192)}


def matmul_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, shape: tuple[int, int, int] | None = None,
                  steps: int = 5, trials: int = 3) -> float:
    """The matmul rate in ``dtype`` on this device, the best of ``trials`` timings (``MATMUL_SHAPES`` by default).
    The best, not the mean, so that a noisy moment does not lower the bar the model is held to."""
    m, k, n = shape or MATMUL_SHAPES.get(device.type, MATMUL_SHAPES["cuda"])
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return max(2 * m * k * n / timed(lambda: a @ b, device, 2, steps) / 1e12 for _ in range(trials))


class PeakMemory:
    """Peak memory growth during a block: torch's allocator peak on CUDA; sampled resident-set growth on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0.0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.process = psutil.Process()
            self.base = self.process.memory_info().rss
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self.thread.join()
        self.peak_mb = self.peak / 2**20


def bench_recipe(task: str | None, shape: str | None, llm: str | None, batch: int, sets: list[str],
                 preset: str | None = None, backbone: str | None = None) -> Recipe:
    if (task is None) == (shape is None):
        raise ConfigError("give a TASK or --shape (2d-224 or 3d-28), not both or neither")
    if shape is not None and shape not in SHAPES:
        raise ConfigError(f"--shape {shape}: choose one of {', '.join(SHAPES)}")
    base = SHAPES[shape] if shape else {"task": task, "sets": [], "llm": None}
    flags = [("--batch", "train.batch_size", batch), ("--llm", "booster.llm", llm or base["llm"]),
             ("--backbone", "backbone.name", backbone)]
    recipe = load_recipe(base["task"], preset=preset, flags=flags, sets=base["sets"] + sets)
    if recipe.model != "rllm":
        raise ConfigError(f"medboost bench compares R-LLM booster modes; model={recipe.model} is not measured by it")
    return recipe


def bench_mode(recipe: Recipe, warmup: int, steps: int, matmul: float) -> dict[str, Any]:
    """Measure one booster mode of ``recipe`` (already set to that mode)."""
    device = resolve_device(recipe.train.device)
    amp = autocast_dtype(recipe.train.precision, device)
    task = recipe.task_info
    memory = PeakMemory(device).__enter__()  # from before the model exists: weights, optimizer state, activations
    built = build_model(recipe, task, device)
    model = built.model
    runner = prepare_runner(model, recipe)
    train_tf, eval_tf = make_transforms(recipe, model.backbone)
    optimizer = make_optimizer(model, recipe)
    b = recipe.train.batch_size
    size = recipe.data.size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, task.n_channels) + (size,) * task.dims, generator=g, dtype=torch.uint8)
    images = images.to(device)
    labels = torch.randint(0, 2, (b, task.n_classes if task.multilabel else 1), generator=g).to(device)
    gen = torch.Generator().manual_seed(1)

    def step():
        train_step(runner, optimizer, images, labels, train_tf, gen, amp, task.task_type)

    @torch.no_grad()
    def forward(module=runner):
        with autocast(device, amp):
            module(eval_tf(images))

    model.train()
    step_s = timed(step, device, warmup, steps)
    memory.__exit__(None, None, None)
    model.eval()
    eval_s = timed(forward, device, max(1, warmup // 2), steps)
    model.train()
    train_flops = count_flops(lambda: train_step(model, optimizer, images, labels, train_tf, gen, amp,
                                                 task.task_type))
    model.eval()
    fwd_flops = count_flops(lambda: forward(model))  # counted on the plain module: the same ops, no compile hooks
    total, trainable = count_parameters(model)
    row = {
        "booster": recipe.booster.mode, "params_total": total, "params_trainable": trainable,
        "gmacs_per_image": fwd_flops / 2 / b / 1e9, "train_ms_per_step": step_s * 1e3,
        "train_images_per_second": b / step_s, "eval_images_per_second": b / eval_s, "peak_memory_mb": memory.peak_mb,
        "step_tflops": train_flops / step_s / 1e12, "step_fraction_of_matmul": train_flops / step_s / 1e12 / matmul,
        "layer_tflops": None, "layer_fraction_of_matmul": None, "tokens": model.backbone.n_tokens,
        "input_size": model.backbone.input_size,
    }
    lm = model.booster.lm if recipe.booster.mode not in ("none", "mlp") else None
    if lm is not None:  # the frozen layer alone, at the shape it sees in training
        r = torch.randn(b, model.backbone.n_tokens, built.llm.spec.hidden, device=device,
                        dtype=amp or torch.float32, requires_grad=True)

        def layer_step():
            with autocast(device, amp):
                out = lm(r)
            out.float().sum().backward()

        layer_s = timed(layer_step, device, warmup, steps)
        layer_flops = count_flops(layer_step)
        row.update(layer_tflops=layer_flops / layer_s / 1e12, layer_fraction_of_matmul=layer_flops / layer_s / 1e12 / matmul)
    del model, runner, optimizer, built
    return row


def run_bench(recipe: Recipe, modes: list[str], warmup: int, steps: int, results_dir: Path | None,
              label: str, log=print, matmul_shape: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
    set_threads(recipe.train.threads)
    device = resolve_device(recipe.train.device)
    amp = autocast_dtype(recipe.train.precision, device)
    dtype = amp or torch.float32  # the reference runs in the precision the model's matmuls run in
    matmul = matmul_tflops(device, dtype, matmul_shape)
    log(f"{_dtype_name(dtype)} matmul rate on {device_name(device)}: {matmul:.3f} TFLOP/s")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    rows = []
    for mode in modes:
        case = recipe.model_copy(update={"booster": recipe.booster.model_copy(update={"mode": mode})})
        Recipe.model_validate(case.model_dump())  # the mode is one of the schema's
        log(f"measuring {label} booster={mode} ...")
        row = bench_mode(case, warmup, steps, matmul)
        row.update({
            "bench_id": f"{stamp}-{label}-{mode}", "case": label, "task": case.task_info.short,
            "backbone": case.backbone.name, "llm": case.booster.llm if mode not in ("none", "mlp") else None,
            "batch": case.train.batch_size, "matmul_tflops": matmul, "matmul_dtype": _dtype_name(dtype),
            "device": device_name(device), "precision": _dtype_name(amp) if amp else "fp32",
            "compile": case.train.compile, "channels_last": case.train.channels_last, "threads": torch.get_num_threads(),
            "warmup": warmup, "steps": steps, "versions_json": package_versions(), "git_commit": git_commit(),
            "config_json": case.model_dump_json(), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        rows.append(row)
        if results_dir is not None:
            write_bench_row(results_dir, row)
    return rows


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))
