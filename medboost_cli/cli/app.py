"""The ``medboost`` typer app, its global options, and what the command modules share: the consoles, the options
several commands take, and the small functions that print."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..allocator import CHOICES as ALLOCATORS
from ..errors import explain

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark whether a frozen language-model layer boosts biomedical image classifiers (R-LLM on MedMNIST).",
)
# Wide enough for the tables when the output is a file or a pipe (rich would use 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DataDir = typer.Option(None, "--data-dir", envvar="MEDBOOST_DATA", show_envvar=True,
                       help="MedMNIST folder (default: ~/.medmnist)")
ResultsDir = typer.Option(None, "--results-dir", envvar="MEDBOOST_RESULTS", show_envvar=True,
                          help="results folder (default: ./results)")

AllocatorName = Enum("AllocatorName", {n: n for n in ALLOCATORS}, type=str)


def _version(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:  # the entry's early look at the options prints nothing
        from .. import __version__

        console.print(f"medboost {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
    allocator: AllocatorName = typer.Option(
        "system", "--allocator", envvar="MEDBOOST_ALLOCATOR", show_envvar=True,
        help="host-memory allocator for train, evaluate, ablate and bench: system (the default: the process as "
             "started), auto (tcmalloc where installed, else the mimalloc medboost installs), tcmalloc, mimalloc or "
             "jemalloc; all but system start the command "
             "again with LD_PRELOAD, which the processes it starts inherit"),
) -> None:
    """Benchmark whether a frozen language-model layer boosts biomedical image classifiers (R-LLM on MedMNIST).

    ``--allocator`` takes effect before this runs: the entry (``entry.allocator_choice``) reads it with this
    app's parser and starts the process again on that allocator before the command is built."""


@contextmanager
def interruptible(go_on: str | None = None):
    """Ctrl-C or SIGTERM (``errors.Interrupted``) while training: one line saying how to go on (``go_on``: for a
    command that resumes by itself, unlike ``train``), exit 130 or 143 (typer would otherwise exit 130 silently)."""
    try:
        yield
    except KeyboardInterrupt as e:
        kind, message, code = explain(e, go_on) if go_on else explain(e)
        err_console.print(f"[bold red]{kind}[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(code) from None


def log(message: str) -> None:
    """A line on stderr: what a run says, progress and paths written."""
    err_console.print(message, soft_wrap=True, highlight=False)


def say(message: str) -> None:
    """A line on stdout: the command's result."""
    console.print(message, soft_wrap=True, highlight=False)


def metrics_table(first: str, rows: list[tuple[str, float, float]]) -> None:
    """An ACC/AUC table with one row per (label, acc, auc)."""
    table = Table()
    for col in (first, "ACC", "AUC"):
        table.add_column(col, justify="right")
    for label, acc, auc in rows:
        table.add_row(label, f"{acc:.4f}", f"{auc:.4f}")
    console.print(table)


# What users change most, as first-class options of train and ablate: (option, recipe key, help).
COMMON_KEYS = [
    ("--epochs", "train.epochs", "training epochs"),
    ("--lr", "train.lr", "peak learning rate (AdamW)"),
    ("--batch-size", "train.batch_size", "training batch size"),
    ("--llm", "booster.llm", "F_L source: minilm, a Hugging Face or Meta folder, a hub id, random:llama-7b"),
    ("--layer", "booster.layer", "F_L's layer index (negative counts from the end)"),
]
Epochs = typer.Option(None, "--epochs", min=1, help=COMMON_KEYS[0][2])
Lr = typer.Option(None, "--lr", help=COMMON_KEYS[1][2])
BatchSize = typer.Option(None, "--batch-size", min=1, help=COMMON_KEYS[2][2])
Llm = typer.Option(None, "--llm", help=COMMON_KEYS[3][2])
Layer = typer.Option(None, "--layer", help=COMMON_KEYS[4][2])
Track = typer.Option([], "--track", help="also log to tensorboard, wandb (offline unless $WANDB_MODE) or mlflow, under "
                     "the results folder (repeatable; default: $MEDBOOST_TRACK, comma-separated)")


def common_flags(*values) -> list[tuple[str, str, object]]:
    """(label, key, value) for load_recipe, in COMMON_KEYS' order; unset options are skipped there."""
    return [(option, key, value) for (option, key, _), value in zip(COMMON_KEYS, values)]


def results_dir_of(arg: Optional[Path]) -> Path:
    from ..paths import check_name

    return check_name(arg or os.environ.get("MEDBOOST_RESULTS") or "results", "--results-dir")
