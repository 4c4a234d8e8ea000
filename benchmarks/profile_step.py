"""Where an R-LLM training step's time goes on this machine, against its FLOP floor.

Two views of the same step (``steps.train_step`` on a synthetic uint8 batch, as `medboost bench` runs it):

1. by part (``step_breakdown`` of breakdown.py, beside this script): resize/augment, backbone + head, the frozen
   layer F_L, F_E/F_D + loss, the optimizer, each timed on its own (median over --steps) with its FLOPs counted,
   and its floor: the FLOPs at the matmul rate measured first, in the precision the model runs in;
2. by operator (torch.profiler over --steps steps): the operators with the most self time, and the groups that are
   not matrix work (casts and copies, optimizer kernels, elementwise, attention, layer norms).

    python benchmarks/profile_step.py --shape 2d-224 --batch 8            # the paper's 2D shape (LLaMA-7B layer)
    python benchmarks/profile_step.py --shape 2d-224 --batch 128
    python benchmarks/profile_step.py --task breast --preset cpu --batch 64 # the CPU preset's own step
    python benchmarks/profile_step.py ... --set train.precision=fp32       # any recipe key
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import torch
from rich.console import Console
from torch.profiler import ProfilerActivity, profile

from medboost_cli.bench import bench_recipe
from medboost_cli.bench_step import StepBench
from medboost_cli.bench_timing import dtype_name, matmul_tflops
from medboost_cli.hardware import autocast_dtype, device_name, resolve_device, set_threads

from breakdown import breakdown_table, step_breakdown  # this folder's

# Operator groups for the second view: the first pattern an operator's name contains decides its group.
GROUPS = [
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
                "aten::_addmm_activation", "aten::einsum")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("convolution", ("conv",)),
    ("casts and copies", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous")),
    ("optimizer", ("_foreach", "adamw", "Optimizer", "clip_grad", "aten::_fused_adam")),
    ("norms", ("layer_norm", "rms_norm", "aten::rsqrt", "aten::pow", "aten::mean")),
    ("resize/augment", ("grid_sampler", "affine_grid", "upsample", "interpolate")),
    ("activations", ("gelu", "silu", "relu", "softmax", "sigmoid")),
    ("elementwise", ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::neg", "aten::fill_", "aten::zero_",
                     "aten::sum", "aten::cat", "aten::where")),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, patterns in GROUPS:
        if any(p.lower() in lowered for p in patterns):
            return group
    return "other"


def profile_ops(bench: StepBench, warmup: int, steps: int, top: int) -> tuple[str, dict[str, float], float]:
    """torch.profiler over ``steps`` train steps: the top operators by self time (a table), the self time per
    group (ms per step) and the profiled wall time per step (ms)."""
    device = bench.device
    bench.model.train()
    for _ in range(warmup):
        bench.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            bench.step()
    events = prof.key_averages()
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total / 1e3 / steps
    wall = max((e.time_range.end for e in prof.events()), default=0) - min(
        (e.time_range.start for e in prof.events()), default=0)
    table = events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)
    return table, dict(groups), wall / 1e3 / steps


def step_arguments(description: str, batch: int, warmup: int, steps: int) -> argparse.ArgumentParser:
    """The options that say which step to measure (shared with ``page_faults.py``)."""
    ap = argparse.ArgumentParser(description=description)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--shape", choices=["2d-224", "3d-28"])
    where.add_argument("--task")
    ap.add_argument("--preset")
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--booster", default="rllm")
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override a recipe key (repeatable)")
    return ap


def step_recipe(args: argparse.Namespace):
    """The recipe those options name, with its CPU threads set."""
    recipe = bench_recipe(args.task, args.shape, None, args.batch, args.sets + [f"booster.mode={args.booster}"],
                          preset=args.preset)
    set_threads(recipe.train.threads)
    return recipe


def main() -> int:
    ap = step_arguments(__doc__.splitlines()[0], batch=8, warmup=2, steps=5)
    ap.add_argument("--top", type=int, default=20, help="operators listed by self time")
    args = ap.parse_args()
    recipe = step_recipe(args)
    device = resolve_device(recipe.train.device)
    dtype = autocast_dtype(recipe.train.precision, device) or torch.float32
    console = Console(width=None if sys.stdout.isatty() else 160)
    matmul = matmul_tflops(device, dtype)
    label = args.shape or args.task
    console.print(f"{label}, batch {args.batch}, {device_name(device)}, {torch.get_num_threads()} threads; "
                  f"{dtype_name(dtype)} matmul {matmul:.3f} TFLOP/s")
    built = StepBench.of(recipe)  # one model and batch for both views
    rows = step_breakdown(recipe, args.warmup, args.steps, matmul, bench=built)
    console.print(breakdown_table(rows, f"{label} batch {args.batch}: the step by part (each timed alone, median of "
                                        f"{args.steps})"))
    step = rows[-1]
    console.print(f"whole step: {step['ms']:.1f} ms = {step['ms'] / args.batch:.1f} ms/img; floor {step['floor_ms']:.1f} "
                  f"ms = {step['floor_ms'] / args.batch:.1f} ms/img; {100 * step['fraction_of_floor']:.0f}% of the floor")
    table, groups, wall = profile_ops(built, 1, args.steps, args.top)
    print(table)
    total = sum(groups.values())
    console.print(f"self time per step by operator group (profiled wall {wall:.1f} ms/step, self total {total:.1f}):")
    for name, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        console.print(f"  {name:18s} {ms:9.1f} ms  {100 * ms / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
