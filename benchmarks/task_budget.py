"""Whole CPU-preset runs on files with each task's real split sizes: does the step budget hold every task to about
the same cost (the target: within 1.5x between BreastMNIST and OCTMNIST)?

    python benchmarks/task_budget.py WORKDIR [--tasks breast oct] [--real DIR]

For each task it writes a stand-in file under WORKDIR/data with the task's train/val/test sizes, shape and class
count (medmnist's INFO) and labels learnable from the images' brightness, unless ``--real DIR`` holds the real
file (then that one is used, MD5-checked). It then runs ``medboost bench TASK --run --preset cpu`` on it, one task
after the other in fresh processes, and prints each run's wall time, its parts and the ratio to the first task's.
The stand-in's metrics mean nothing; its cost is the real file's (the same shapes, batches, steps and splits).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from medboost_cli.tasks import resolve_task


def stand_in(task_name: str, folder: Path, size: int = 28) -> Path:
    """A file in ``task_name``'s layout with its real split sizes (random images, labels in the task's range)."""
    task = resolve_task(task_name)
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        count = task.n_samples[split]
        if task.multilabel:
            labels = rng.integers(0, 2, size=(count, task.n_classes))
        else:
            labels = rng.integers(0, task.n_classes, size=(count, 1))
        shape = (count,) + (size,) * task.dims + ((3,) if task.n_channels == 3 else ())
        images = rng.integers(0, 90, size=shape, dtype=np.uint8)
        images += (labels[:, :1] * (160 // max(1, task.n_classes - 1))).astype(np.uint8).reshape(
            (count,) + (1,) * (len(shape) - 1))
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / task.filename(size)
    np.savez(path, **arrays)
    return path


def run(task: str, data: Path, results: Path, verify: bool) -> dict:
    """``medboost bench TASK --run --preset cpu`` in a fresh process; its bench row."""
    command = [sys.executable, "-m", "medboost_cli", "bench", task, "--run", "--preset", "cpu",
               "--data-dir", str(data), "--results-dir", str(results)]
    command += [] if verify else ["--set", "data.verify=false"]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    rows = [pd.read_parquet(p).iloc[0].to_dict() for p in sorted((results / "bench").glob("*-run.parquet"))]
    names = {task, resolve_task(task).flag, resolve_task(task).short}
    return next(r for r in reversed(rows) if r["task"] in names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--tasks", nargs="+", default=["breast", "oct"])
    ap.add_argument("--real", type=Path, help="a MedMNIST folder: tasks whose file is there use it")
    args = ap.parse_args(argv)
    walls = {}
    for task in args.tasks:
        real = args.real is not None and (args.real / resolve_task(task).filename(28)).exists()
        data = args.real if real else args.workdir / "data"
        if not real:
            stand_in(task, data)
        row = run(task, data, args.workdir / "results", verify=real)
        figures = json.loads(row["run_cost_json"])
        walls[task] = figures["wall_seconds"]
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in figures["seconds"].items())
        n = resolve_task(task).n_samples
        print(f"{task} ({'real file' if real else 'stand-in'}, {n['train']}/{n['val']}/{n['test']} images): "
              f"{figures['wall_seconds']:.1f} s ({parts}); {row['precision']}; "
              f"{walls[task] / walls[args.tasks[0]]:.2f}x {args.tasks[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
