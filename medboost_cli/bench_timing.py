"""The clock and the counters `medboost bench` measures with: FLOPs counted on the executed ops, timings of one call
each (median and IQR as a torch.utils.benchmark Measurement), and the matmul rate a step is held to."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils import flop_counter


@contextmanager
def _quiet(logger: str):
    """Only errors from ``logger`` in this block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# torch.utils.benchmark imports torch.utils.cpp_extension, which warns on import where it finds nvcc but no CUDA
# runtime ("No CUDA runtime is found, using CUDA_HOME=..."): noise here, where nothing builds an extension, and
# printed by every process (each mode's worker is one).
with _quiet("torch.utils.cpp_extension"):
    from torch.utils import benchmark


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


def seconds_per_call(fn, steps: int) -> float:
    """Mean seconds per call of ``fn`` over ``steps`` calls, after torch.utils.benchmark.Timer's two untimed calls
    (its clock waits for the accelerator; all of torch's threads are used, not the Timer's default of one)."""
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(steps).mean


def measure(fn, warmup: int, steps: int, label: str) -> benchmark.Measurement:
    """``steps`` timings of one call each, after ``warmup`` untimed calls, as a torch.utils.benchmark Measurement:
    its median and IQR (linear-interpolated quartiles), over ``steps`` measurements.

    A fixed count, not ``Timer.blocked_autorange``, which picks its own number of timings from a minimum run time,
    nor ``Timer.timeit``, which gives one timing for all its calls (after two untimed ones of its own): a train step
    at the paper's shape takes seconds on a CPU, so ``--steps`` says how many there are. The clock is
    torch.utils.benchmark's, which waits for the accelerator before each reading."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = benchmark.timer()
        fn()
        times.append(benchmark.timer() - start)
    spec = benchmark.TaskSpec(stmt=label, setup="", num_threads=torch.get_num_threads())
    return benchmark.Measurement(number_per_run=1, raw_times=times, task_spec=spec)


def ms_fields(m: benchmark.Measurement, name: str) -> dict[str, Any]:
    """The row's fields for a timing: ``NAME_ms_median``, ``NAME_ms_iqr``, ``NAME_ms_n`` and every step's time."""
    return {f"{name}_ms_median": m.median * 1e3, f"{name}_ms_iqr": m.iqr * 1e3, f"{name}_ms_n": len(m.times),
            f"{name}_ms_samples": [t * 1e3 for t in m.times]}


MATMUL_SHAPES = {"cpu": (2048, 4096, 4096), "cuda": (8192, 8192, 8192)}


def matmul_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, shape: tuple[int, int, int] | None = None,
                  steps: int = 5, trials: int = 3) -> float:
    """The matmul rate in ``dtype`` on this device, the best of ``trials`` timings (``MATMUL_SHAPES`` by default).
    The best, not the mean, so that a noisy moment does not lower the bar the model is held to."""
    m, k, n = shape or MATMUL_SHAPES.get(device.type, MATMUL_SHAPES["cuda"])
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return max(2 * m * k * n / seconds_per_call(lambda: a @ b, steps) / 1e12 for _ in range(trials))


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


QUICK_MATMUL_SHAPES = {"cpu": (1024, 2048, 2048), "cuda": (8192, 8192, 8192)}


def matmul_tflops_within(device: torch.device, dtype: torch.dtype, seconds: float,
                         shape: tuple[int, int, int] | None = None) -> float:
    """The matmul rate in ``dtype`` from as many calls as fit in ``seconds`` after one untimed call, the best of
    them (at least one timed call): the reference a whole run is held to, measured in the run's own process at
    little cost (``QUICK_MATMUL_SHAPES``: on the CPU a smaller product than ``MATMUL_SHAPES``, so that a short
    budget still holds several calls)."""
    m, k, n = shape or QUICK_MATMUL_SHAPES.get(device.type, QUICK_MATMUL_SHAPES["cuda"])
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *args: None)
    a @ b  # noqa: B018 (the first call sets up the library's kernels and threads)
    sync(device)
    best, end = 0.0, benchmark.timer() + seconds
    while True:
        start = benchmark.timer()
        a @ b  # noqa: B018
        sync(device)
        now = benchmark.timer()
        best = max(best, 2 * m * k * n / (now - start) / 1e12)
        if now >= end:
            return best
