"""What the booster costs: train-step and eval throughput, memory, parameters and FLOPs per booster mode.

Each mode is measured in a fresh process (``bench_in_worker``), so that its memory is its own and not what an
earlier mode left in the allocator: the worker's peak resident set (and on CUDA torch's peak allocation). In it the
real training step (``engine.train_step``: batched resize/augment on the device, autocast, backward, AdamW) runs on
a synthetic uint8 batch; after warm-up steps, each timed step is timed on its own, and the row holds the median and
IQR of those timings (``torch.utils.benchmark.Measurement``), and images/s from the median. FLOPs are counted by
``torch.utils.flop_counter`` on the executed ops (frozen weights get no weight gradient, so none is counted). Two
utilisation figures are reported against a matmul rate, in the precision the model runs in (bf16 where the device
has it natively, else fp32), measured in the same run on the same device: the whole train step's, and the frozen LM
layer's alone (forward + backward to its input, at the batch's token shape).

Each model family says what its cases are (``ModelFamily.bench``, medboost_cli/models/families): R-LLM's are
booster modes; PneumoLLM's are variants of the model, the whole model and the same without its LM (Table 4's
"w/o LLM"), whose difference is what the LM costs, and its frozen path is the stack of LM layers (with their
adapters) at the d + m tokens it sees."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import torch
from rich.table import Table
from torch.utils import flop_counter

from . import errors
from .allocator import INSTALL, LIBRARIES, find, in_use
from .engine import loss_fn, make_optimizer, make_transforms, prepare_runner, train_step
from .errors import EXIT_INTERNAL, ConfigError, MedboostError
from .hardware import autocast, autocast_dtype, device_name, peak_rss_mb, resolve_device, set_threads
from .models import FAMILIES, build_model, count_parameters
from .models.families import DEFAULT_FAMILY
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
                 preset: str | None = None, backbone: str | None = None, model: str | None = None) -> Recipe:
    if (task is None) == (shape is None):
        raise ConfigError("give a TASK or --shape (2d-224 or 3d-28), not both or neither")
    if shape is not None and shape not in SHAPES:
        raise ConfigError(f"--shape {shape}: choose one of {', '.join(SHAPES)}")
    base = SHAPES[shape] if shape else {"task": task, "sets": [], "llm": None}
    flags = [("--model", "model", model), ("--batch", "train.batch_size", batch),
             ("--llm", "booster.llm", llm or base["llm"]), ("--backbone", "backbone.name", backbone)]
    return load_recipe(base["task"], preset=preset, flags=flags, sets=base["sets"] + sets)


def bench_names(recipe: Recipe, boosters: list[str], variants: list[str]) -> list[str]:
    """The cases `medboost bench` compares: ``--booster`` modes for a family benched by booster mode (R-LLM:
    default none and rllm), ``--variant`` names for one benched by variant (PneumoLLM: default the whole model and
    the model without its LM)."""
    spec = recipe.family.bench
    if spec.variants is None:
        if variants:
            raise ConfigError(f"--variant is for --model {' / '.join(_by_variant())} (model={recipe.model} here); "
                              f"compare --booster modes")
        return boosters or list(spec.default)
    if boosters:
        raise ConfigError(f"--booster compares {' / '.join(_by_booster())} booster modes; with --model {recipe.model} "
                          f"compare --variant {' / '.join(spec.variants)}")
    return variants or list(spec.default)


def _by_variant() -> list[str]:
    return [f.name for f in FAMILIES.values() if f.bench.variants is not None]


def _by_booster() -> list[str]:
    return [f.title for f in FAMILIES.values() if f.bench.variants is None]


def bench_cases(recipe: Recipe, names: list[str]) -> list[tuple[str, Recipe]]:
    """(name, recipe) for each case to measure: booster modes, or the family's variants (keys of its section)."""
    family, cases = recipe.family, []
    variants = family.bench.variants
    for name in names:
        if variants is not None:
            if name not in variants:
                raise ConfigError(f"model={recipe.model} is benched by variant, not booster mode: {name!r} is not one "
                                  f"of {', '.join(variants)} (--variant)")
            section = getattr(recipe, family.name)
            update = {family.name: section.model_copy(update=variants[name])}
        else:
            owners = [f.name for f in FAMILIES.values() if name in (f.bench.variants or {})]
            if owners:
                raise ConfigError(f"--variant {name} is for --model {' / '.join(owners)}; {family.title} runs are "
                                  f"benched by --booster")
            update = {"booster": recipe.booster.model_copy(update={"mode": name})}
        case = recipe.model_copy(update=update)
        cases.append((name, Recipe.model_validate(case.model_dump())))  # the mode is one of the schema's
    return cases


def frozen_path(recipe: Recipe, built) -> tuple[torch.nn.Module, int, int] | None:
    """(the frozen LM path, the tokens it sees, its width) of a built model, or None without one, as its family
    says: R-LLM's F_L at the backbone's tokens, PneumoLLM's stack of LM layers (with their adapters) at its d + m
    tokens."""
    return recipe.family.frozen_path(built)


@dataclass
class StepBench:
    """What measuring a recipe's training step needs, built as the training loop builds it: the model (``runner``
    is what the loop calls: compiled, channels-last), its transforms and AdamW, and a synthetic uint8 batch of the
    recipe's size with random labels (fixed seeds), with the generator its augmentation draws from."""

    recipe: Recipe
    device: torch.device
    amp: torch.dtype | None
    built: Any
    runner: torch.nn.Module
    train_tf: Any
    eval_tf: Any
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    gen: torch.Generator

    @classmethod
    def of(cls, recipe: Recipe) -> "StepBench":
        device = resolve_device(recipe.train.device)
        task = recipe.task_info
        built = build_model(recipe, task, device)
        runner = prepare_runner(built.model, recipe)
        train_tf, eval_tf = make_transforms(recipe, built.model.backbone)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (recipe.train.batch_size, task.n_channels) + (recipe.data.size,) * task.dims,
                               generator=g, dtype=torch.uint8).to(device)
        labels = torch.randint(0, 2, (recipe.train.batch_size, task.n_classes if task.multilabel else 1),
                               generator=g).to(device)
        return cls(recipe, device, autocast_dtype(recipe.train.precision, device), built, runner, train_tf, eval_tf,
                   make_optimizer(built.model, recipe), images, labels, torch.Generator().manual_seed(1))

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model

    def step(self, module: torch.nn.Module | None = None) -> None:
        """One training step as the training loop takes it (label smoothing, gradient clipping, AdamW)."""
        t = self.recipe.train
        train_step(module or self.runner, self.optimizer, self.images, self.labels, self.train_tf, self.gen, self.amp,
                   self.recipe.task_info.task_type, t.label_smoothing, t.grad_clip, micro_batch=t.micro_batch)


def bench_mode(recipe: Recipe, warmup: int, steps: int, matmul: float) -> dict[str, Any]:
    """Measure one booster mode of ``recipe`` (already set to that mode) in this process; ``run_bench`` calls it in
    a fresh process per mode, whose memory readings are then the mode's own."""
    device = resolve_device(recipe.train.device)
    rss_before_model = psutil.Process().memory_info().rss / 2**20  # python, torch and medboost loaded
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bench = StepBench.of(recipe)
    built, model, runner, amp, step = bench.built, bench.model, bench.runner, bench.amp, bench.step
    path = frozen_path(recipe, built)
    b = recipe.train.batch_size

    @torch.no_grad()
    def forward(module=runner):
        with autocast(device, amp):
            module(bench.eval_tf(bench.images))

    model.train()
    train = measure(step, warmup, steps, "train step")
    model.eval()
    evaluation = measure(forward, max(1, warmup // 2), steps, "eval forward")
    model.train()
    train_flops = count_flops(lambda: step(model))
    model.eval()
    fwd_flops = count_flops(lambda: forward(model))  # counted on the plain module: the same ops, no compile hooks
    total, trainable = count_parameters(model)
    row = {
        "model": recipe.model, "params_total": total, "params_trainable": trainable,
        "gmacs_per_image": fwd_flops / 2 / b / 1e9, **_ms(train, "train"), **_ms(evaluation, "eval"),
        "train_images_per_second": b / train.median, "eval_images_per_second": b / evaluation.median,
        "step_tflops": train_flops / train.median / 1e12,
        "step_fraction_of_matmul": train_flops / train.median / 1e12 / matmul,
        "layer_tflops": None, "layer_fraction_of_matmul": None, "layer_ms_median": None,
        "tokens": path[1] if path else model.backbone.n_tokens, "input_size": model.backbone.input_size,
    }
    if path is not None:  # the frozen path alone, at the shape it sees in training
        lm, n_tokens, hidden = path
        r = torch.randn(b, n_tokens, hidden, device=device, dtype=amp or torch.float32, requires_grad=True)

        def layer_step():
            with autocast(device, amp):
                out = lm(r)
            out.float().sum().backward()

        layer_s = measure(layer_step, warmup, steps, "frozen path").median
        layer_flops = count_flops(layer_step)
        row.update(layer_tflops=layer_flops / layer_s / 1e12, layer_fraction_of_matmul=layer_flops / layer_s / 1e12 / matmul,
                   layer_ms_median=layer_s * 1e3)
    row.update({
        "worker_pid": os.getpid(), "worker_rss_before_model_mb": rss_before_model, "worker_peak_rss_mb": peak_rss_mb(),
        "peak_cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": device_name(device), "precision": _dtype_name(amp) if amp else "fp32",
        "threads": torch.get_num_threads(), "allocator": in_use(),
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
    where = f"the bench worker for {mode}"
    if reply is None:
        if exitcode is not None and exitcode < 0:
            name = signal.Signals(-exitcode).name
            hint = " (out of memory? try a smaller --batch)" if name == "SIGKILL" else ""
            return BenchWorkerError(f"{where} was ended by {name} before it sent a row{hint}")
        return BenchWorkerError(f"{where} ended with exit code {exitcode} before it sent a row")
    cls = getattr(errors, reply["error"], None)
    if isinstance(cls, type) and issubclass(cls, MedboostError):
        return cls(f"{mode}: {reply['message']}")
    first = (reply["message"].splitlines() or [""])[0]
    return BenchWorkerError(f"{reply['error']} in {where}: {first}\n{reply.get('traceback', '')}")


def bench_in_worker(case: Recipe, warmup: int, steps: int, matmul: float, name: str | None = None) -> dict[str, Any]:
    """``bench_mode`` in a fresh process (multiprocessing's spawn: a new interpreter, not a fork), so that one
    mode's memory figures do not include what an earlier mode left in the allocator, and compiled kernels, caches
    and thread pools start cold for every mode alike. Its row comes back as JSON over a pipe."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    mode = name or f"booster={case.booster.mode}"  # what the worker measures, in its errors
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
    """Measure each case in ``modes`` (booster modes; PneumoLLM: ``VARIANTS``), each in its own process, against
    the matmul rate measured here, before the first case and again after the last: the rows hold the better of the
    two (both are kept), so that a slow moment of the machine while the reference ran (0.143 against 0.154 TFLOP/s
    in the runs before and after, seen once on a 2-core EPYC) does not put a step above 100% of its floor. Each
    row is written when its case is done, with the first rate, and again at the end with the better one.

    The workers are started with multiprocessing's spawn, which imports the calling script again in each: a script
    that calls this needs the ``if __name__ == "__main__":`` guard (as ``benchmarks/paper_shape.py`` has)."""
    cases = bench_cases(recipe, modes)  # checked before the minutes the matmul rate takes
    set_threads(recipe.train.threads)
    device = resolve_device(recipe.train.device)
    amp = autocast_dtype(recipe.train.precision, device)
    dtype = amp or torch.float32  # the reference runs in the precision the model's matmuls run in
    matmul = matmul_tflops(device, dtype, matmul_shape)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the workers get the memory the reference's matrices used
    log(f"{_dtype_name(dtype)} matmul rate on {device_name(device)}: {matmul:.3f} TFLOP/s")
    if device.type == "cpu" and (hint := allocator_hint()):
        log(hint)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    rows = []
    for mode, case in cases:
        what = f"{case.family.bench.column}={mode}"
        log(f"measuring {label} {what} in a fresh process ...")
        row = bench_in_worker(case, warmup, steps, matmul, what)
        has_lm = case.family.loads_lm(case)
        row.update({
            "booster": mode, "bench_id": f"{stamp}-{label}-{mode}", "case": label, "task": case.task_info.short,
            "backbone": case.backbone.name, "llm": case.booster.llm if has_lm else None,
            "batch": case.train.batch_size, "matmul_tflops": matmul, "matmul_dtype": _dtype_name(dtype),
            "compile": case.train.compile, "channels_last": case.train.channels_last,
            "warmup": warmup, "steps": steps, "versions_json": package_versions(), "git_commit": git_commit(),
            "config_json": case.model_dump_json(), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        rows.append(row)
        if results_dir is not None:
            write_bench_row(results_dir, row)
    after = matmul_tflops(device, dtype, matmul_shape)
    log(f"{_dtype_name(dtype)} matmul rate after the last case: {after:.3f} TFLOP/s")
    for row in rows:
        with_reference(row, matmul, after)
        if results_dir is not None:
            write_bench_row(results_dir, row)
    return rows


def allocator_hint(current: str | None = None, installed: bool | None = None) -> str | None:
    """One line for a CPU bench on glibc where no caching allocator is installed: it is what the figures lack most
    (allocator.py; README, performance)."""
    current = in_use() if current is None else current
    if installed is None:
        installed = any(find(name) for name in LIBRARIES)
    if current != "glibc" or installed:
        return None
    return ("note: on glibc's malloc every step faults its activations in anew; with tcmalloc installed "
            f"({INSTALL['tcmalloc'].split(',')[0]}) medboost runs on it and CPU steps measured 3-20% faster")


def with_reference(row: dict[str, Any], before: float, after: float) -> dict[str, Any]:
    """``row`` held to the better of the matmul rates measured before and after the cases (``run_bench``)."""
    best = max(before, after)
    row.update(matmul_tflops=best, matmul_tflops_before=before, matmul_tflops_after=after,
               step_fraction_of_matmul=row["step_tflops"] / best)
    if row.get("layer_tflops"):
        row["layer_fraction_of_matmul"] = row["layer_tflops"] / best
    return row


def _spread(median: float, iqr: float) -> str:
    """``median ± IQR`` with as many decimals as the median's size warrants."""
    digits = 0 if median >= 100 else 1 if median >= 10 else 2
    return f"{median:.{digits}f} ± {iqr:.{digits}f}"


def bench_table(rows: list[dict[str, Any]], label: str) -> Table:
    """The rows side by side: times as median ± IQR over the timed steps, memory as each worker process's own. The
    FLOP floor of a step is its counted FLOPs at the matmul rate measured in the same run: the time the step would
    take if every FLOP ran as fast as one large matmul; "% of floor" is that time over the measured one."""
    first = rows[0]
    cuda = any(r["peak_cuda_allocated_mb"] is not None for r in rows)
    spec = FAMILIES[first["model"] if first.get("model") in FAMILIES else DEFAULT_FAMILY].bench  # rows without it
    table = Table(title=f"{label}{spec.caption}: batch {first['batch']}, {first['device']}, {first['precision']}; "
                        f"{first['matmul_dtype']} matmul {first['matmul_tflops']:.3f} TFLOP/s; times: median ± IQR "
                        f"over {first['steps']} timed steps; memory: each mode's own worker process")
    path = spec.frozen  # the frozen path
    columns = [spec.column, "params (M)", "trainable (M)", "GMACs/img", "train ms/step", "train img/s",
               "eval ms/batch", "eval img/s", "RSS before model MB", "peak RSS MB",
               *(["peak CUDA alloc MB"] if cuda else []), "step TFLOP/s", "step floor ms", "step % of floor",
               f"{path} TFLOP/s", f"{path} % of floor"]
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
                      f"{r['train_ms_median'] * r['step_fraction_of_matmul']:.1f}",
                      f"{100 * r['step_fraction_of_matmul']:.0f}%", *layer)
    return table


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


# ----------------------------------------------------------------------------------- where a step's time goes


def step_breakdown(recipe: Recipe, warmup: int, steps: int, matmul: float,
                   bench: StepBench | None = None) -> list[dict[str, Any]]:
    """The R-LLM train step of ``recipe`` split into its parts, each timed on its own (median over ``steps``) and its
    FLOPs counted, in this process: the batched resize/augment, the backbone and head (forward and backward, with
    the booster switched to identity), the frozen layer (forward and the gradient to its input, at the token
    shape it sees), F_E/F_D and the loss (what the full forward/backward takes beyond those two), and the
    optimizer (clipping, AdamW). ``floor_ms`` is a part's FLOPs at the ``matmul`` rate (TFLOP/s, the model's
    precision); the last row is the whole step as ``train_step`` runs it, and the one before what the parts
    leave of it (zero_grad, the step's own overhead, timing noise). ``bench``: the recipe's model and batch, when
    the caller has built them already."""
    if not (recipe.family.boosted and recipe.family.loads_lm(recipe)):
        raise ConfigError("the step breakdown is of an R-LLM step with a frozen layer (booster rllm, out or hybrid)")
    if recipe.train.micro_batch and recipe.train.micro_batch < recipe.train.batch_size:
        raise ConfigError("the step breakdown times each part on the whole batch at once: drop train.micro_batch, "
                          "or give its size as --batch")
    bench = bench or StepBench.of(recipe)
    device, amp, model, runner, optimizer = bench.device, bench.amp, bench.model, bench.runner, bench.optimizer
    task, b = recipe.task_info, recipe.train.batch_size
    x = bench.train_tf(bench.images, bench.gen)
    labels = bench.labels
    clip = recipe.train.grad_clip
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lm, n_tokens, hidden = frozen_path(recipe, bench.built)
    r = torch.randn(b, n_tokens, hidden, device=device, dtype=amp or torch.float32, requires_grad=True)
    model.train()

    def forward_backward(module=runner):
        with autocast(device, amp):
            logits = module(x)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits, labels, task.task_type, recipe.train.label_smoothing).backward()

    def without_booster():
        mode, model.booster.mode = model.booster.mode, "none"
        try:
            forward_backward()
        finally:
            model.booster.mode = mode

    def layer():
        with autocast(device, amp):
            out = lm(r)
        out.float().sum().backward()

    forward_backward()  # gradients exist, as at the optimizer's step in training

    def optimize():
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()

    parts = [("resize/augment", lambda: bench.train_tf(bench.images, bench.gen)),
             ("backbone + head fwd/bwd", without_booster), ("F_L fwd + input grad", layer),
             ("fwd/bwd (whole model)", forward_backward), ("optimizer", optimize), ("step", bench.step)]
    timed = {name: measure(fn, warmup, steps, name).median * 1e3 for name, fn in parts}
    flops = {name: count_flops(fn) for name, fn in parts}
    whole = ("fwd/bwd (whole model)", "backbone + head fwd/bwd", "F_L fwd + input grad")
    timed["F_E/F_D + loss"] = timed[whole[0]] - timed[whole[1]] - timed[whole[2]]
    flops["F_E/F_D + loss"] = flops[whole[0]] - flops[whole[1]] - flops[whole[2]]
    order = ["resize/augment", "backbone + head fwd/bwd", "F_L fwd + input grad", "F_E/F_D + loss", "optimizer"]
    timed["other"] = timed["step"] - sum(timed[k] for k in order)
    flops["other"] = flops["step"] - sum(flops[k] for k in order)
    rows = []
    for name in order + ["other", "step"]:
        floor = flops[name] / (matmul * 1e12) * 1e3
        rows.append({"part": name, "ms": timed[name], "gflop": flops[name] / 1e9, "floor_ms": floor,
                     "fraction_of_floor": floor / timed[name] if timed[name] > 0 and flops[name] else None})
    return rows


def breakdown_table(rows: list[dict[str, Any]], title: str) -> Table:
    step = rows[-1]["ms"]
    table = Table(title=title)
    for col in ("part", "ms/step", "share", "GFLOP/step", "floor ms", "% of floor"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for r in rows:
        table.add_row(r["part"], f"{r['ms']:.1f}", f"{100 * r['ms'] / step:.0f}%", f"{r['gflop']:.2f}",
                      f"{r['floor_ms']:.1f}", f"{100 * r['fraction_of_floor']:.0f}%" if r["fraction_of_floor"] else "-")
    return table
