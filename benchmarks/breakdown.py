"""Where an R-LLM training step's time goes: the step split into its parts, each timed on its own and its FLOPs
counted (``step_breakdown``), and the table ``profile_step.py`` prints of them (``breakdown_table``).

Benchmark code, not medboost's: it builds on `medboost bench`'s step (``medboost_cli.bench_step.StepBench``) and clock
(``medboost_cli.bench_timing``). Scripts of this folder import it by name (``from breakdown import ...``)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from rich.table import Table

from medboost_cli.bench import frozen_path
from medboost_cli.bench_step import StepBench
from medboost_cli.bench_timing import count_flops, measure
from medboost_cli.errors import ConfigError
from medboost_cli.hardware import autocast
from medboost_cli.recipes import Recipe
from medboost_cli.steps import loss_fn

ORDER = ["resize/augment", "backbone + head fwd/bwd", "F_L fwd + input grad", "F_E/F_D + loss", "optimizer"]
WITH_FROZEN_LAYER = ("rllm", "out", "hybrid")  # the booster modes (run arms) whose step has an F_L


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
    if recipe.arm not in WITH_FROZEN_LAYER:
        raise ConfigError("the step breakdown is of an R-LLM step with a frozen layer (booster rllm, out or hybrid)")
    if recipe.train.micro_batch and recipe.train.micro_batch < recipe.train.batch_size:
        raise ConfigError("the step breakdown times each part on the whole batch at once: drop train.micro_batch, "
                          "or give its size as --batch")
    parts = _parts(recipe, bench or StepBench.of(recipe))
    timed = {name: measure(fn, warmup, steps, name).median * 1e3 for name, fn in parts}
    flops = {name: count_flops(fn) for name, fn in parts}
    for measured in (timed, flops):  # what the parts timed alone leave of the whole
        whole = ("fwd/bwd (whole model)", "backbone + head fwd/bwd", "F_L fwd + input grad")
        measured["F_E/F_D + loss"] = measured[whole[0]] - measured[whole[1]] - measured[whole[2]]
        measured["other"] = measured["step"] - sum(measured[k] for k in ORDER)
    rows = []
    for name in ORDER + ["other", "step"]:
        floor = flops[name] / (matmul * 1e12) * 1e3
        rows.append({"part": name, "ms": timed[name], "gflop": flops[name] / 1e9, "floor_ms": floor,
                     "fraction_of_floor": floor / timed[name] if timed[name] > 0 and flops[name] else None})
    return rows


def _parts(recipe: Recipe, bench: StepBench) -> list[tuple[str, Callable[[], Any]]]:
    """(name, call) of each part timed alone, and of the whole model's forward/backward and the whole step; the
    gradients exist when it returns, as at the optimizer's step in training."""
    device, amp, model, runner, optimizer = bench.device, bench.amp, bench.model, bench.runner, bench.optimizer
    task, b = recipe.task_info, recipe.train.batch_size
    x = bench.train_tf(bench.images, bench.gen)
    clip = recipe.train.grad_clip
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lm, n_tokens, hidden = frozen_path(recipe, bench.built)
    r = torch.randn(b, n_tokens, hidden, device=device, dtype=amp or torch.float32, requires_grad=True)
    model.train()

    def forward_backward(module=runner):
        with autocast(device, amp):
            logits = module(x)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits, bench.labels, task.task_type, recipe.train.label_smoothing).backward()

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

    def optimize():
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()

    forward_backward()
    return [("resize/augment", lambda: bench.train_tf(bench.images, bench.gen)),
            ("backbone + head fwd/bwd", without_booster), ("F_L fwd + input grad", layer),
            ("fwd/bwd (whole model)", forward_backward), ("optimizer", optimize), ("step", bench.step)]


def breakdown_table(rows: list[dict[str, Any]], title: str) -> Table:
    step = rows[-1]["ms"]
    table = Table(title=title)
    for col in ("part", "ms/step", "share", "GFLOP/step", "floor ms", "% of floor"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for r in rows:
        table.add_row(r["part"], f"{r['ms']:.1f}", f"{100 * r['ms'] / step:.0f}%", f"{r['gflop']:.2f}",
                      f"{r['floor_ms']:.1f}", f"{100 * r['fraction_of_floor']:.0f}%" if r["fraction_of_floor"] else "-")
    return table
