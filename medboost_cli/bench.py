"""What the booster costs: train-step and eval throughput, memory, parameters and FLOPs per booster mode.

Each mode is measured in a fresh process (``bench_in_worker``), so that its memory is its own and not what an
earlier mode left in the allocator: the worker's peak resident set (and on CUDA torch's peak allocation). In it the
real training step (``steps.train_step``: batched resize/augment on the device, autocast, backward, AdamW) runs on
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
import multiprocessing
import os
import signal
import sys
import traceback
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import torch
from rich.table import Table

from . import errors
from .allocator import AUTO_ORDER, INSTALL, find, in_use
from .bench_step import StepBench
from .bench_timing import count_flops, matmul_tflops, measure
from .bench_timing import dtype_name as _dtype_name, ms_fields as _ms
from .errors import EXIT_INTERNAL, ConfigError, MedboostError
from .hardware import autocast, autocast_dtype, device_name, peak_rss_mb, resolve_device, set_threads
from .models import FAMILIES, count_parameters
from .models.families import DEFAULT_FAMILY
from .recipes import Recipe, load_recipe
from .results import git_commit, package_versions, write_bench_row


# Shapes of the paper's two settings, for `medboost bench --shape`.
SHAPES = {
    "2d-224": {"task": "breast", "sets": ["backbone.pretrained=false"], "llm": "random:llama-7b"},
    "3d-28": {"task": "adrenal3d", "sets": [], "llm": "random:llama-7b"},
}


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
            by_variant = [f.name for f in FAMILIES.values() if f.bench.variants is not None]
            raise ConfigError(f"--variant is for --model {' / '.join(by_variant)} (model={recipe.model} here); "
                              f"compare --booster modes")
        return boosters or list(spec.default)
    if boosters:
        by_booster = [f.title for f in FAMILIES.values() if f.bench.variants is None]
        raise ConfigError(f"--booster compares {' / '.join(by_booster)} booster modes; with --model {recipe.model} "
                          f"compare --variant {' / '.join(spec.variants)}")
    return variants or list(spec.default)


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
    """One line for a CPU bench on glibc: what a caching allocator would gain, and how to get it (allocator.py;
    docs: performance). Nothing on a caching allocator, or off glibc."""
    current = in_use() if current is None else current
    if installed is None:
        installed = any(find(name) for name in AUTO_ORDER)
    if current != "glibc":
        return None
    how = "--allocator auto" if installed else f"{INSTALL['mimalloc'].split(' (')[0]}, then --allocator auto"
    return ("note: on glibc's malloc every step faults its activations in anew; on tcmalloc or mimalloc CPU steps "
            f"measured 3-25% faster: {how} (or MEDBOOST_ALLOCATOR=auto)")


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
