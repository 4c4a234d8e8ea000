"""``medboost runs``: the runs in a results folder, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ResultsError
from . import choices
from .app import ResultsDir, app, console, results_dir_of

RUN_COLUMNS = ["run_id", "status", "task", "backbone", "booster", "llm", "layer", "lm_norm", "seed", "epochs_done",
               "best_epoch", "val_auc", "test_acc", "test_auc", "precision", "train_seconds", "ended_at",
               "test_balanced_acc", "test_macro_f1", "test_mcc", "test_ece", "test_panel_json", "manifest_json"]
# In --json the JSON columns are objects, under their names less "_json" (null for rows without them).
OBJECTS = {"test_panel_json": "test_panel", "manifest_json": "manifest"}
# The table on screen: what tells runs apart and how each went; --json has every RUN_COLUMNS key.
SHOWN = ["run_id", "status", "task", "backbone", "booster", "seed", "epochs_done", "best_epoch", "val_auc",
         "test_acc", "test_auc", "precision"]
LEFT = {"run_id", "status", "task", "backbone", "booster", "precision"}


INTEGERS = ("seed", "epochs_done", "best_epoch", "layer")


def one_based(records: list[dict]) -> list[dict]:
    """Counts as integers (a column with a missing value reads as floats) and ``best_epoch`` counted from 1, as the
    epoch lines of a run print it (the results store it from 0)."""
    out = []
    for r in records:
        r = {**r, **{k: int(r[k]) for k in INTEGERS if isinstance(r.get(k), (int, float))}}
        r |= {name: json.loads(r[k]) if isinstance(r.get(k), str) else None for k, name in OBJECTS.items() if k in r}
        r = {k: v for k, v in r.items() if k not in OBJECTS}
        if r.get("best_epoch") is not None:
            r["best_epoch"] += 1
        out.append(r)
    return out


@app.command()
def runs(
    task: Optional[str] = typer.Option(None, "--task", help="only this task (short name or medmnist flag)"),
    status: Optional[choices.RunStatus] = typer.Option(None, "--status", help="only runs with this status"),
    as_json: bool = typer.Option(False, "--json", help="a JSON array with one object per run (keys: "
                                 + ", ".join(OBJECTS.get(c, c) for c in RUN_COLUMNS)
                                 + "; best_epoch counted from 1; test_panel and manifest as objects), for scripts"),
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """List the runs in the results folder, as a table or as JSON (best_epoch counted from 1 in both)."""
    from ..results import load_results
    from ..tasks import resolve_task

    folder = results_dir_of(results_dir)
    if not folder.exists():
        raise ResultsError(f"{folder}: no such results folder; point --results-dir (or $MEDBOOST_RESULTS) at the "
                           f"folder that `medboost train` or `ablate` wrote")
    df = load_results(folder, columns=RUN_COLUMNS, status=choices.value(status))
    if task is not None:
        df = df[df["task"] == resolve_task(task).short]
    records = one_based(json.loads(df.to_json(orient="records")))
    if as_json:
        typer.echo(json.dumps(records, indent=1))
        return
    table = Table(title=f"{len(records)} runs in {results_dir_of(results_dir)}")
    for col in SHOWN:
        table.add_column(col, justify="left" if col in LEFT else "right")
    for r in records:
        table.add_row(*[f"{r[c]:.4f}" if isinstance(r[c], float) else "" if r[c] is None else str(r[c]) for c in SHOWN])
    console.print(table)
