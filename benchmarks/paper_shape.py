"""The booster's cost at the paper's 2D shape on this machine: ViT-S/16 at 224, batch 8, booster none vs rllm with
a LLaMA-7B-shaped frozen layer (random weights), through `medboost bench` (the real training step).

Prints the bench table (each mode measured in its own process; times as median ± IQR over --steps steps) and
checks the targets against the matmul rate measured in the same run, in the model's precision:
the frozen layer (forward + backward to its input) at >= 60% of it, the whole rllm train step at >= 40%.

    python benchmarks/paper_shape.py [--batch 8] [--steps 5] [--compile] [--results-dir results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from medboost_cli.bench import bench_recipe, bench_table, run_bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile=true)")
    ap.add_argument("--results-dir", type=Path, default=Path("results"))
    args = ap.parse_args()
    sets = ["train.compile=true"] if args.compile else []
    recipe = bench_recipe(None, "2d-224", None, args.batch, sets)
    rows = run_bench(recipe, ["none", "rllm"], args.warmup, args.steps, args.results_dir, "2d-224")
    Console(width=None if sys.stdout.isatty() else 200).print(bench_table(rows, f"2d-224 (compile={args.compile})"))
    rllm = rows[1]
    checks = [("frozen layer >= 60% of matmul rate", rllm["layer_fraction_of_matmul"] >= 0.60),
              ("rllm train step >= 40% of matmul rate", rllm["step_fraction_of_matmul"] >= 0.40)]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
