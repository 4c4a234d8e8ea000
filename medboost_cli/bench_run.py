"""``medboost bench --run``: one whole training run of a recipe, held to the matmul rate of its process
(run_cost.py), with its wall time broken down by part.

The run trains into a temporary results folder, so a result of the same configuration in the user's folder is
neither replaced nor refused; its row, with the breakdown, is kept as a bench row (``results/bench/``)."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from .recipes import Recipe
from .run_cost import breakdown, row_line

KEPT = ("run_id", "task", "backbone", "booster", "llm", "device", "world_size", "precision", "epochs_done",
        "train_seconds", "test_auc", "run_flops", "run_fraction_of_matmul", "run_cost_json", "config_json",
        "versions_json", "git_commit")  # the run row's columns the bench row keeps


def bench_run(recipe: Recipe, data_dir: Path, results_dir: Path | None, label: str, log=print) -> dict[str, Any]:
    """Train ``recipe`` once in this process and return its bench row (also written under ``results_dir``)."""
    from .engine import train
    from .results import write_bench_row

    with tempfile.TemporaryDirectory(prefix="medboost-bench-run-") as folder:
        row = train(recipe, data_dir, Path(folder), log=log)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    bench = {c: row[c] for c in KEPT} | {"bench_id": f"{stamp}-{label}-run", "case": label, "kind": "run",
                                         "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if results_dir is not None:
        write_bench_row(results_dir, bench)
    log(row_line(row))
    return bench


def run_table(row: dict[str, Any], label: str) -> Table:
    """A run's wall time by part: seconds, share of the wall time, and the FLOPs each part ran."""
    figures = json.loads(row["run_cost_json"])
    fraction = row["run_fraction_of_matmul"]
    at = f"run at {100 * fraction:.1f}% of it" if fraction is not None else "no figure"
    table = Table(title=f"{label}: a whole run on {row['device']}, {row['precision']}; "
                        f"{figures['total_flops'] / 1e12:.3f} TFLOP in {figures['wall_seconds']:.1f} s; "
                        f"{figures['matmul_dtype']} matmul {figures['matmul_tflops']:.3f} TFLOP/s; {at}")
    for column in ("part", "seconds", "share of wall", "TFLOP"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for part in breakdown(row):
        table.add_row(part["part"], f"{part['seconds']:.2f}",
                      f"{100 * part['share']:.1f}%" if part["share"] is not None else "-",
                      f"{part['tflop']:.3f}" if part["tflop"] else "-")
    table.add_row("whole run", f"{figures['wall_seconds']:.2f}", "100%", f"{figures['total_flops'] / 1e12:.3f}")
    return table
