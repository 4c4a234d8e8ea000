"""What the local pool costs and saves: a 4-run tiny study with --jobs 1 and --jobs 2, and the start-up time of
each pooled run (prints the figures; nothing asserted).

The study is ``control`` on BreastMNIST under the CPU preset (a baseline and three R-LLM runs with the packaged
MiniLM layer), shrunk to a 1-block, 32-wide ViT on fabricated 28x28 images, so that the start-up of a run
(process, imports, data, model, the LM layer) weighs as much as it can against its training. A run's start-up
is the wall time of its worker process minus the run's own time (``Outcome.overhead_s``); the first one also
waits for the forkserver to import torch and the models, once per launch. ``--start-method spawn`` shows what
the imports cost when every run pays for them.

    python benchmarks/pool_overhead.py [--epochs 5] [--start-method auto|spawn|forkserver]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from medboost_cli.launchers import cpu_threads, jobs_for, launch, run_pool
from medboost_cli.studies import expand, load_study

TINY = ["data.verify=false", "backbone.dim=32", "backbone.depth=1", "backbone.heads=2", "train.batch_size=16",
        "train.eval_batch_size=64", "train.warmup_epochs=0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--start-method", default="auto", choices=["auto", "spawn", "forkserver"])
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import write_medmnist

    quiet = lambda *_: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        data = write_medmnist(Path(tmp) / "d", "breast").parent
        plan = expand(load_study("control", "cpu"), tasks=["breast"], seeds=1, preset="cpu",
                      extra_sets=TINY + [f"train.epochs={args.epochs}"])
        start = time.perf_counter()
        seq = launch("local", plan, data, Path(tmp) / "r1", jobs=1, say=quiet, log=quiet, show=quiet)
        sequential = time.perf_counter() - start
        todo = [replace(j, threads=cpu_threads(2)) for j in jobs_for(plan, data, Path(tmp) / "r2")]
        start = time.perf_counter()
        pooled = run_pool(todo, 2, quiet, quiet, devices=[], start_method=args.start_method)
        parallel = time.perf_counter() - start
    print(f"{len(plan)} runs, {args.epochs} epochs each, {cpu_threads(1)} cores")
    print(f"--jobs 1: {sequential:.1f} s (runs {', '.join(f'{o.seconds:.1f}' for o in seq)} s, in this process)")
    print(f"--jobs 2: {parallel:.1f} s (runs {', '.join(f'{o.seconds:.1f}' for o in pooled)} s, "
          f"{cpu_threads(2)} threads each; {args.start_method} workers)")
    overheads = [o.overhead_s for o in pooled]
    print(f"start-up per pooled run: {', '.join(f'{s:.1f}' for s in overheads)} s (the first includes the pool's "
          f"start); after the first: mean {sum(overheads[1:]) / max(1, len(overheads) - 1):.2f} s")


if __name__ == "__main__":
    main()
