"""What the booster costs: train-step and eval throughput, memory, parameters and FLOPs per booster mode.

Each mode is measured in a fresh process (``bench_in_worker``), so that its memory is its own and not what an
earlier mode left in the allocator: the worker's peak resident set (and on CUDA torch's peak allocation). In it the
real training step (``engine.train_step``: batched resize/augment on the device, autocast, backward, AdamW) runs on
a synthetic uint8 batch; after warm-up steps, each timed step is timed on its own, and the row holds the median and
IQR of those timings (``torch.utils.benchmark.Measurement``), and images/s from the median. FLOPs are counted by
``torch.utils.flop_counter`` on the executed ops (frozen weights get no weight gradient, so none is counted). Two
utilisation figures are reported against a matmul rate, in the precision the model runs in (bf16 where the device
has it natively, else fp32), measured in the same run on the same device: the whole train step's, and the frozen LM
layer's alone (forward + backward to its input, at the batch's token shape)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import torch
from rich.table import Table
from torch.utils import flop_counter

from . import errors
from .engine import make_optimizer, make_transforms, prepare_runner, train_step
from .errors import EXIT_INTERNAL, ConfigError, MedboostError
from .hardware import autocast, autocast_dtype, device_name, peak_rss_mb, resolve_device, set_threads
from .models import build_model, count_parameters
from .recipes import Recipe, load_recipe
from .results import git_commit, package_versions, write_bench_row


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


def _ms(m: benchmark.Measurement, name: str) -> dict[str, Any]:
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
    """Measure one booster mode of ``recipe`` (already set to that mode) in this process; ``run_bench`` calls it in
    a fresh process per mode, whose memory readings are then the mode's own."""
    device = resolve_device(recipe.train.device)
    amp = autocast_dtype(recipe.train.precision, device)
    task = recipe.task_info
    rss_before_model = psutil.Process().memory_info().rss / 2**20  # python, torch and medboost loaded
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
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
    train = measure(step, warmup, steps, "train step")
    model.eval()
    evaluation = measure(forward, max(1, warmup // 2), steps, "eval forward")
    model.train()
    train_flops = count_flops(lambda: train_step(model, optimizer, images, labels, train_tf, gen, amp,
                                                 task.task_type))
    model.eval()
    fwd_flops = count_flops(lambda: forward(model))  # counted on the plain module: the same ops, no compile hooks
    total, trainable = count_parameters(model)
    row = {
        "booster": recipe.booster.mode, "params_total": total, "params_trainable": trainable,
        "gmacs_per_image": fwd_flops / 2 / b / 1e9, **_ms(train, "train"), **_ms(evaluation, "eval"),
        "train_images_per_second": b / train.median, "eval_images_per_second": b / evaluation.median,
        "step_tflops": train_flops / train.median / 1e12,
        "step_fraction_of_matmul": train_flops / train.median / 1e12 / matmul,
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

        layer_s = measure(layer_step, warmup, steps, "frozen layer").median
        layer_flops = count_flops(layer_step)
        row.update(layer_tflops=layer_flops / layer_s / 1e12, layer_fraction_of_matmul=layer_flops / layer_s / 1e12 / matmul)
    row.update({
        "worker_pid": os.getpid(), "worker_rss_before_model_mb": rss_before_model, "worker_peak_rss_mb": peak_rss_mb(),
        "peak_cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": device_name(device), "precision": _dtype_name(amp) if amp else "fp32",
        "threads": torch.get_num_threads(),
    })
    return row


class BenchWorkerError(RuntimeError):
    """A bench worker failed in a way that is not a ``MedboostError``: a bug, or the process was killed."""


def _worker(send: Connection, recipe_json: str, warmup: int, steps: int, matmul: float) -> None:
    """The body of a bench worker process: measure one mode and send its row, or its error, as JSON.

    A ``MedboostError`` is sent as its class name and message and ends the process with its exit code, so that the
    parent raises the same error; anything else is sent with its traceback and ends it with exit code 1. Ctrl-C is
    left to the parent, which stops the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        recipe = Recipe.model_validate_json(recipe_json)
        set_threads(recipe.train.threads)
        reply, code = {"row": bench_mode(recipe, warmup, steps, matmul)}, 0
    except MedboostError as e:
        reply, code = {"error": type(e).__name__, "message": str(e)}, e.exit_code
    except Exception as e:  # a bug: the parent reports it as an internal error, with this traceback
        reply, code = {"error": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}, EXIT_INTERNAL
    send.send_bytes(json.dumps(reply).encode())
    send.close()
    if code:
        sys.exit(code)


def _worker_failure(reply: dict[str, Any] | None, mode: str, exitcode: int | None) -> Exception:
    """The exception the parent raises for a worker that sent ``reply`` (None: it sent nothing) and ended with
    ``exitcode``: the worker's own ``MedboostError`` class and message, else a ``BenchWorkerError`` saying what
    happened (``MEDBOOST_DEBUG=1`` shows the worker's traceback, kept after the message's first line)."""
    where = f"the bench worker for booster={mode}"
    if reply is None:
        if exitcode is not None and exitcode < 0:
            name = signal.Signals(-exitcode).name
            hint = " (out of memory? try a smaller --batch)" if name == "SIGKILL" else ""
            return BenchWorkerError(f"{where} was ended by {name} before it sent a row{hint}")
        return BenchWorkerError(f"{where} ended with exit code {exitcode} before it sent a row")
    cls = getattr(errors, reply["error"], None)
    if isinstance(cls, type) and issubclass(cls, MedboostError):
        return cls(f"booster={mode}: {reply['message']}")
    first = (reply["message"].splitlines() or [""])[0]
    return BenchWorkerError(f"{reply['error']} in {where}: {first}\n{reply.get('traceback', '')}")


def bench_in_worker(case: Recipe, warmup: int, steps: int, matmul: float) -> dict[str, Any]:
    """``bench_mode`` in a fresh process (multiprocessing's spawn: a new interpreter, not a fork), so that one
    mode's memory figures do not include what an earlier mode left in the allocator, and compiled kernels, caches
    and thread pools start cold for every mode alike. Its row comes back as JSON over a pipe."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    mode = case.booster.mode
    worker = ctx.Process(target=_worker, args=(send, case.model_dump_json(), warmup, steps, matmul),
                         name=f"medboost-bench-{mode}")
    worker.start()
    send.close()  # the worker holds the only writing end: its exit, however it ends, ends the wait
    try:
        try:
            reply = json.loads(receive.recv_bytes())
        except EOFError:
            reply = None
        worker.join()
    finally:  # Ctrl-C in the parent, or an error: the worker does not outlive it
        if worker.is_alive():
            worker.terminate()
            worker.join()
        receive.close()
    if reply is not None and "row" in reply:
        return reply["row"]
    raise _worker_failure(reply, mode, worker.exitcode)


def run_bench(recipe: Recipe, modes: list[str], warmup: int, steps: int, results_dir: Path | None,
              label: str, log=print, matmul_shape: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
    """Measure each mode in ``modes``, each in its own process, against the matmul rate measured here first.

    The workers are started with multiprocessing's spawn, which imports the calling script again in each: a script
    that calls this needs the ``if __name__ == "__main__":`` guard (as ``benchmarks/paper_shape.py`` has)."""
    set_threads(recipe.train.threads)
    device = resolve_device(recipe.train.device)
    amp = autocast_dtype(recipe.train.precision, device)
    dtype = amp or torch.float32  # the reference runs in the precision the model's matmuls run in
    matmul = matmul_tflops(device, dtype, matmul_shape)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the workers get the memory the reference's matrices used
    log(f"{_dtype_name(dtype)} matmul rate on {device_name(device)}: {matmul:.3f} TFLOP/s")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    rows = []
    for mode in modes:
        case = recipe.model_copy(update={"booster": recipe.booster.model_copy(update={"mode": mode})})
        Recipe.model_validate(case.model_dump())  # the mode is one of the schema's
        log(f"measuring {label} booster={mode} in a fresh process ...")
        row = bench_in_worker(case, warmup, steps, matmul)
        row.update({
            "bench_id": f"{stamp}-{label}-{mode}", "case": label, "task": case.task_info.short,
            "backbone": case.backbone.name, "llm": case.booster.llm if mode not in ("none", "mlp") else None,
            "batch": case.train.batch_size, "matmul_tflops": matmul, "matmul_dtype": _dtype_name(dtype),
            "compile": case.train.compile, "channels_last": case.train.channels_last,
            "warmup": warmup, "steps": steps, "versions_json": package_versions(), "git_commit": git_commit(),
            "config_json": case.model_dump_json(), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        rows.append(row)
        if results_dir is not None:
            write_bench_row(results_dir, row)
    return rows


def _spread(median: float, iqr: float) -> str:
    """``median ± IQR`` with as many decimals as the median's size warrants."""
    digits = 0 if median >= 100 else 1 if median >= 10 else 2
    return f"{median:.{digits}f} ± {iqr:.{digits}f}"


def bench_table(rows: list[dict[str, Any]], label: str) -> Table:
    """The rows side by side: times as median ± IQR over the timed steps, memory as each worker process's own."""
    first = rows[0]
    cuda = any(r["peak_cuda_allocated_mb"] is not None for r in rows)
    table = Table(title=f"{label}: batch {first['batch']}, {first['device']}, {first['precision']}; "
                        f"{first['matmul_dtype']} matmul {first['matmul_tflops']:.3f} TFLOP/s; times: median ± IQR "
                        f"over {first['steps']} timed steps; memory: each mode's own worker process")
    columns = ["booster", "params (M)", "trainable (M)", "GMACs/img", "train ms/step", "train img/s",
               "eval ms/batch", "eval img/s", "RSS before model MB", "peak RSS MB",
               *(["peak CUDA alloc MB"] if cuda else []), "step TFLOP/s", "step % matmul", "F_L TFLOP/s",
               "F_L % matmul"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        layer = (f"{r['layer_tflops']:.3f}", f"{100 * r['layer_fraction_of_matmul']:.0f}%") if r["layer_tflops"] else ("-", "-")
        gpu = [f"{r['peak_cuda_allocated_mb']:.0f}" if r["peak_cuda_allocated_mb"] is not None else "-"] if cuda else []
        table.add_row(r["booster"], f"{r['params_total'] / 1e6:.1f}", f"{r['params_trainable'] / 1e6:.1f}",
                      f"{r['gmacs_per_image']:.2f}", _spread(r["train_ms_median"], r["train_ms_iqr"]),
                      f"{r['train_images_per_second']:.1f}", _spread(r["eval_ms_median"], r["eval_ms_iqr"]),
                      f"{r['eval_images_per_second']:.1f}", f"{r['worker_rss_before_model_mb']:.0f}",
                      f"{r['worker_peak_rss_mb']:.0f}", *gpu, f"{r['step_tflops']:.3f}",
                      f"{100 * r['step_fraction_of_matmul']:.0f}%", *layer)
    return table


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))
