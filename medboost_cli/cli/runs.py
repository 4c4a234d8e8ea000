"""``medboost runs``: the runs in a results folder, as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ConfigError, ResultsError, short
from .app import ResultsDir, app, console, results_dir_of

RUN_COLUMNS = ["run_id", "status", "task", "backbone", "booster", "llm", "layer", "lm_norm", "seed", "epochs_done",
               "best_epoch", "val_auc", "test_acc", "test_auc", "precision", "train_seconds", "ended_at"]


@app.command()
def runs(
    task: Optional[str] = typer.Option(None, "--task", help="only this task (short name or medmnist flag)"),
    status: Optional[str] = typer.Option(None, "--status", help="only runs with this status: running, completed, "
                                         "failed or interrupted"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per run, for scripts"),
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """List the runs in the results folder, as a table or as JSON."""
    import json

    from ..results import load_results
    from ..tasks import resolve_task

    from ..results.checks import RUN_STATUSES

    if status is not None and status not in RUN_STATUSES:  # a typo would list nothing and look like no runs
        raise ConfigError(f"--status {short(status)}: a run's status is one of {', '.join(RUN_STATUSES)}")
    folder = results_dir_of(results_dir)
    if not folder.exists():
        raise ResultsError(f"{folder}: no such results folder; point --results-dir (or $MEDBOOST_RESULTS) at the "
                           f"folder that `medboost train` or `ablate` wrote")
    df = load_results(folder, columns=RUN_COLUMNS, status=status)
    if task is not None:
        df = df[df["task"] == resolve_task(task).short]
    records = json.loads(df.to_json(orient="records"))
    if as_json:
        typer.echo(json.dumps(records, indent=1))
        return
    table = Table(title=f"{len(records)} runs in {results_dir_of(results_dir)}")
    shown = ["run_id", "status", "seed", "epochs_done", "val_auc", "test_acc", "test_auc", "precision"]
    for col in shown:
        table.add_column(col, justify="left" if col in ("run_id", "status", "precision") else "right")
    for r in records:
        table.add_row(*[f"{r[c]:.4f}" if isinstance(r[c], float) else "" if r[c] is None else str(r[c]) for c in shown])
    console.print(table)
