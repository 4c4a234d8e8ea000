"""``medboost bench``: each booster mode's (PneumoLLM: each variant's) step time, throughput, memory and FLOPs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import choices
from .app import DataDir, ResultsDir, app, console, log, results_dir_of



@app.command()
def bench(
    task: Optional[str] = typer.Argument(None, help="a task's recipe to measure (or use --shape)"),
    shape: Optional[str] = typer.Option(None, "--shape", help="the paper's shapes: 2d-224 (ViT-S/16) or 3d-28"),
    model: Optional[str] = typer.Option(None, "--model", help="rllm (default) or pneumollm (at --shape 2d-224: CLIP "
                                        "ViT-L/14 + every LLaMA-7B layer, random weights)"),
    boosters: list[choices.BoosterMode] = typer.Option([], "--booster", help="R-LLM: modes to compare (repeatable; default "
                                               "none and rllm)"),
    variants: list[str] = typer.Option([], "--variant", help="PneumoLLM: variants to compare (repeatable; pneumollm, "
                                       "no-llm, simplified; default pneumollm and no-llm)"),
    batch: Optional[int] = typer.Option(None, "--batch-size", "--batch", help="batch size, as for train (default: the recipe's)"),
    llm: Optional[str] = typer.Option(None, "--llm", help="F_L source; random:llama-7b = LLaMA-7B's shape, random weights"),
    backbone: Optional[choices.BackboneName] = typer.Option(None, "--backbone", help="backbone (default: the recipe's)"),
    preset: Optional[choices.PresetName] = typer.Option(None, "--preset", help="cpu: a laptop-sized configuration"),
    warmup: int = typer.Option(2, "--warmup", min=0, help="untimed steps first"),
    steps: int = typer.Option(5, "--steps", min=1, help="timed steps, each timed on its own (median and IQR)"),
    sets: list[str] = typer.Option([], "--set", help="override any recipe key (repeatable)"),
    run: bool = typer.Option(False, "--run", help="train the recipe once, whole, and break its wall time down "
                             "by part against the matmul rate (the run-level efficiency)"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Measure each booster mode's (PneumoLLM: each variant's) train step and eval throughput, memory, parameters
    and FLOPs, side by side; each in its own process."""
    from ..bench import bench_names, bench_recipe, bench_table, run_bench
    from ..precision import bench_candidates

    recipe = bench_recipe(task, shape, llm, batch, sets, preset=choices.value(preset), backbone=choices.value(backbone), model=model)
    label = shape or task
    if run:
        from ..bench_run import bench_run, run_table
        from ..data import data_dir_from

        console.print(run_table(bench_run(recipe, data_dir_from(data_dir), results_dir_of(results_dir), label, log=log),
                                label))
        return
    names = bench_names(recipe, [choices.value(b) for b in boosters], variants)
    for case in bench_candidates(recipe):  # fp32 and bf16 where precision auto would measure which is faster
        rows = run_bench(case, names, warmup, steps, results_dir_of(results_dir), label, log=log)
        console.print(bench_table(rows, label))
