"""The booster's cost at the paper's 2D shape on this machine: ViT-S/16 at 224, batch 8, booster none vs rllm with
a LLaMA-7B-shaped frozen layer (random weights), through `medboost bench` (the real training step).

Prints the bench table and checks the targets against the bf16 matmul rate measured in the same run:
the frozen layer (forward + backward to its input) at >= 60% of it, the whole rllm train step at >= 40%.

    python benchmarks/paper_shape.py [--batch 8] [--steps 5] [--compile] [--results-dir results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medboost_cli.bench import bench_recipe, run_bench


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
    matmul = rows[0]["matmul_tflops"]
    print(f"\n{rows[0]['device']}, {rows[0]['precision']}, batch {args.batch}, compile={args.compile}; "
          f"{rows[0]['matmul_dtype']} matmul {matmul:.3f} TFLOP/s (2048x4096 @ 4096x4096)")
    print(f"{'booster':8s} {'params M':>9s} {'GMACs/img':>10s} {'ms/step':>9s} {'img/s':>7s} {'eval img/s':>10s} "
          f"{'peak MB':>8s} {'step TF/s':>9s} {'step %':>7s} {'F_L TF/s':>9s} {'F_L %':>6s}")
    for r in rows:
        layer = (f"{r['layer_tflops']:9.3f} {100 * r['layer_fraction_of_matmul']:5.0f}%" if r["layer_tflops"]
                 else f"{'-':>9s} {'-':>6s}")
        print(f"{r['booster']:8s} {r['params_total'] / 1e6:9.1f} {r['gmacs_per_image']:10.2f} "
              f"{r['train_ms_per_step']:9.0f} {r['train_images_per_second']:7.2f} {r['eval_images_per_second']:10.2f} "
              f"{r['peak_memory_mb']:8.0f} {r['step_tflops']:9.3f} {100 * r['step_fraction_of_matmul']:6.0f}% {layer}")
    rllm = rows[1]
    checks = [("frozen layer >= 60% of matmul rate", rllm["layer_fraction_of_matmul"] >= 0.60),
              ("rllm train step >= 40% of matmul rate", rllm["step_fraction_of_matmul"] >= 0.40)]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
