"""Page faults and time per training step: how much of a CPU step is the kernel handing out fresh memory.

Each step's activations are freed at its end; glibc returns blocks over 32 MiB to the operating system, so the
next step faults in and zeroes every page again. This prints the step's median time and minor page faults, for
comparing allocator settings, which must be set before the process starts, e.g.:

    python benchmarks/page_faults.py --shape 2d-224 --batch 32 --warmup 1 --steps 2
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/page_faults.py --shape 2d-224 --batch 32 ...
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/page_faults.py --task breast --preset cpu --batch 64
    LD_PRELOAD=libjemalloc.so.2 python benchmarks/page_faults.py --shape 2d-224 --batch 32 --warmup 1 --steps 2
    python benchmarks/page_faults.py --task breast --preset cpu --batch 64 --set train.threads=1

(Run it under ``/usr/bin/time -v`` for the process's peak RSS and system time.)
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time

import torch

from medboost_cli.bench_step import StepBench
from profile_step import step_arguments, step_recipe  # this folder's: the same options


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> int:
    args = step_arguments(__doc__.splitlines()[0], batch=64, warmup=3, steps=10).parse_args()
    recipe = step_recipe(args)
    bench = StepBench.of(recipe)
    bench.model.train()
    for _ in range(args.warmup):
        bench.step()
    times, faults = [], []
    for _ in range(args.steps):
        before, start = minor_faults(), time.perf_counter()
        bench.step()
        times.append((time.perf_counter() - start) * 1e3)
        faults.append(minor_faults() - before)
    settings = {k: v for k, v in os.environ.items()
                if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "THP_", "TCMALLOC_", "LD_PRELOAD"))}
    print(f"{args.shape or args.task}, batch {args.batch}, {torch.get_num_threads()} threads, allocator settings "
          f"{settings or 'none'}: step median {statistics.median(times):.1f} ms (min {min(times):.1f}, max "
          f"{max(times):.1f}); minor page faults per step median {statistics.median(faults):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
