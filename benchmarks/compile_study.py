"""What torch.compile costs and gives over a study: N runs of one recipe, each in a fresh process, with
``train.compile=true`` and inductor's on-disk cache in a new folder (the first run compiles cold, the later ones
find its graphs: warm), and N runs without compile, alternated. Prints each run's wall time (process start to the
written row), its training time and its run-level efficiency (run_cost.py), then the cold and warm means.

    python benchmarks/compile_study.py [--runs 4] [--task breast] [--preset cpu] [--epochs 3] [--set KEY=VALUE ...]
                                       [--data-dir DIR] [--cache-dir DIR]

The figures are printed, not stored: each run trains into a temporary results folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def one_run(args, compile_: bool, cache: Path) -> dict:
    """One `medboost train` in a fresh process; its row's figures and the wall time seen from here."""
    sets = [*args.set, f"train.epochs={args.epochs}", f"train.compile={str(compile_).lower()}"]
    with tempfile.TemporaryDirectory(prefix="compile-study-") as results:
        command = [sys.executable, "-m", "medboost_cli", "train", args.task, "--preset", args.preset, "--quiet",
                   "--json", "--results-dir", results, *(["--data-dir", str(args.data_dir)] if args.data_dir else []),
                   *[a for s in sets for a in ("--set", s)]]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "MEDBOOST_COMPILE_CACHE": str(cache)})
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"compile_study: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    figures = json.loads(row["run_cost_json"])
    return {"compile": compile_, "process_s": seconds, "wall_s": figures["wall_seconds"],
            "train_s": figures["seconds"]["train"], "fraction": row["run_fraction_of_matmul"],
            "test_auc": row["test_auc"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--task", default="breast")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="a recipe key for every run (repeatable)")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--cache-dir", type=Path, help="inductor's cache (default: a new temporary folder, cold)")
    args = ap.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="inductor-cache-"))
    runs = []
    for i in range(args.runs):
        for compile_ in (True, False):
            runs.append(one_run(args, compile_, cache) | {"run": i + 1})
            print(f"run {i + 1} compile={compile_}: {runs[-1]['wall_s']:.1f} s", file=sys.stderr)
    table = Table(title=f"{args.task} --preset {args.preset}, {args.epochs} epochs; inductor cache {cache}")
    for column in ("run", "compile", "cache", "process s", "wall s", "train s", "run % of matmul", "test AUC"):
        table.add_column(column, justify="right")
    for r in runs:
        cache_state = ("cold" if r["run"] == 1 else "warm") if r["compile"] else "-"
        table.add_row(str(r["run"]), str(r["compile"]), cache_state, f"{r['process_s']:.1f}", f"{r['wall_s']:.1f}",
                      f"{r['train_s']:.1f}", f"{100 * r['fraction']:.1f}%", f"{r['test_auc']:.4f}")
    Console().print(table)
    for label, chosen in (("compile, cold", [r for r in runs if r["compile"] and r["run"] == 1]),
                          ("compile, warm", [r for r in runs if r["compile"] and r["run"] > 1]),
                          ("no compile", [r for r in runs if not r["compile"]])):
        if chosen:
            print(f"{label}: mean wall {statistics.mean(r['wall_s'] for r in chosen):.1f} s over {len(chosen)} run(s)")
    study = {c: sum(r["wall_s"] for r in runs if r["compile"] == c) for c in (True, False)}
    print(f"the study's {args.runs} runs: {study[True]:.1f} s with compile, {study[False]:.1f} s without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
