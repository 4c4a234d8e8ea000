"""``medboost download``, ``train`` and ``evaluate``: one task's data, one run, and a saved run scored again."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import EXIT_CTRL_C, ConfigError
from . import choices
from .app import (BatchSize, DataDir, Epochs, Layer, Llm, Lr, ResultsDir, Track, app, common_flags, err_console,
                  interruptible, log, metrics_table, results_dir_of, say)


@app.command()
def download(
    tasks: list[str] = typer.Argument(..., help="short names (breast, adrenal3d, ...) or medmnist flags"),
    size: int = typer.Option(28, "--size", help="image size: 28, 64, 128 or 224 (3D: 28 or 64)"),
    data_dir: Optional[Path] = DataDir,
    mirror: Optional[str] = typer.Option(None, "--mirror", help="fetch MIRROR/FILE instead of medmnist's URL"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar (there is none when stderr is not a terminal)"),
) -> None:
    """Download MedMNIST files (medmnist's URLs) and check their MD5, also for files already present; a download
    cut short keeps its .part file, and the same command continues it."""
    from ..data import data_dir_from, download as fetch
    from ..tasks import resolve_task

    folder = data_dir_from(data_dir)
    bar = err_console if sys.stderr.isatty() and not quiet else None
    try:
        for name in tasks:
            fetch(resolve_task(name), size, folder, log=say, console=bar, mirror=mirror)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: the .part file keeps what arrived; the same command resumes it",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CTRL_C) from None


@app.command()
def train(
    task: str = typer.Argument(..., help="short name (breast, derma, ...), medmnist flag, or a cohort file (.npz from "
                               "`medboost prepare dicom`)"),
    booster: Optional[choices.BoosterMode] = typer.Option(None, "--booster", help="booster mode (default: the recipe's)"),
    model: Optional[str] = typer.Option(None, "--model", help="rllm (backbone + booster, the default) or pneumollm "
                                        "(PneumoLLM: its recipes/models/pneumollm.yaml and the pneumollm.* keys)"),
    backbone: Optional[choices.BackboneName] = typer.Option(None, "--backbone", help="backbone (default: the recipe's)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed, 0 <= seed < 2**32 (default: the recipe's, 0)"),
    size: Optional[int] = typer.Option(None, "--size", help="the MedMNIST file's image size (data.size): 28, 64, 128 "
                                       "or 224 (3D: 28 or 64); data.resize says how it reaches the backbone's input"),
    preset: Optional[choices.PresetName] = typer.Option(None, "--preset", help="cpu: a laptop-sized configuration"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
    sets: list[str] = typer.Option([], "--set", help="override any recipe key: --set train.lr=1e-3 (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="continue this run from its last epoch checkpoint"),
    force: bool = typer.Option(False, "--force", help="train a run that is already completed again, replacing its result"),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="use this YAML file instead of recipes/TASK.yaml"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    track: list[str] = Track,
    epochs: Optional[int] = Epochs,
    lr: Optional[float] = Lr,
    batch_size: Optional[int] = BatchSize,
    llm: Optional[str] = Llm,
    layer: Optional[int] = Layer,
    as_json: bool = typer.Option(False, "--json", help="print the final results row as JSON (per-sample scores left "
                                 "out; they are in the Parquet row) instead of the tables"),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="cohort files: K patient-level folds; trains "
                                        "every fold (one run each) unless --fold, then prints mean ± std"),
    fold: Optional[int] = typer.Option(None, "--fold", min=0, help="cohort files: train only this fold (0..K-1)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved recipe (YAML, every key "
                                      "after the preset, flags and --set) and its run id, and exit without training"),
    devices: Optional[int] = typer.Option(None, "--devices", min=1, help="train this one run data-parallel in N "
                                          "processes on this machine, one per GPU (or N CPU processes); torchrun "
                                          "starts them on several machines (docs: running at scale)"),
) -> None:
    """Train a classifier with or without the booster; select on val, score test once, write a results row."""
    flags = [("--booster", "booster.mode", choices.value(booster)), ("--model", "model", model),
             ("--backbone", "backbone.name", choices.value(backbone)),
             ("--seed", "seed", seed), ("--size", "data.size", size), ("--folds", "data.folds", folds),
             ("--fold", "data.fold", fold)]
    flags += common_flags(epochs, lr, batch_size, llm, layer)
    _train(task, flags, preset=choices.value(preset), sets=sets, recipe_file=recipe_file, data_dir=data_dir,
           folder=results_dir_of(results_dir), track=track, resume=resume, force=force, quiet=quiet,
           as_json=as_json, folds=folds, fold=fold, devices=devices, print_config=print_config)


def _train(task: str, flags: list, *, preset, sets, recipe_file, data_dir, folder: Path, track, resume: bool,
           force: bool, quiet: bool, as_json: bool, folds, fold, devices, print_config: bool = False) -> None:
    """`medboost train`, once its options are read: one run (or every fold), in one process or several."""
    from .. import distributed
    from ..data import data_dir_from
    from ..engine import train as run_training
    from ..progress import RichReporter
    from ..recipes import load_recipe
    from ..trackers import make_reporter, resolve_tracks

    tracks = resolve_tracks(track)
    with interruptible(), distributed.session() as world:  # several processes: one reports an error, all stop
        recipe = load_recipe(task, preset=preset, flags=flags, sets=sets, recipe_file=recipe_file)
        if print_config:
            return _print_config(recipe)
        if devices and devices > 1 and world.size == 1:  # start the processes, which run this same command
            raise typer.Exit(distributed.launch_local(devices, sys.argv[1:]))
        if devices and world.size > 1 and devices != world.local_size:
            raise ConfigError(f"--devices {devices} but the launcher started {world.local_size} processes on this "
                              f"node; leave --devices out under torchrun")
        main = world.is_main  # prints, shows progress and tracks; the other processes stay silent

        def train_one(one):
            progress = RichReporter(err_console) if main and not quiet else None
            reporter = make_reporter(one, folder, tracks, progress, log=log) if main else None
            return run_training(one, data_dir_from(data_dir), folder, resume=resume, force=force, reporter=reporter,
                                log=log if main else (lambda message: None))

        if folds is not None and fold is None:
            if world.size > 1:
                raise ConfigError("--folds without --fold trains the folds one after the other in one process; with "
                                  "several processes train one fold at a time: --folds K --fold F")
            _train_folds(recipe, folder, train_one, force, as_json)
            return
        row = train_one(recipe)
    if main:
        _show_row(row, folder, as_json)


def _show_row(row: dict, folder: Path, as_json: bool) -> None:
    """A trained run: its row as JSON, or its best epoch, val and test metrics, sizes and speed."""
    from ..results import ResultsDir as Layout
    from ..run_cost import row_line

    if as_json:
        typer.echo(_json_row(row))
        return
    if row.get("eval_points"):  # a step budget: the run was selected among evaluation points (budget.py)
        best = f"best point {row['best_epoch'] + 1} of {row['epochs_done']} ({row['steps']} steps)"
    else:
        best = f"best epoch {row['best_epoch'] + 1} of {row['epochs_done']}"
    say(f"{row['run_id']}: {best} by val {row['select_metric']}")
    metrics_table("split", [("val", row["val_acc"], row["val_auc"]), ("test", row["test_acc"], row["test_auc"])])
    say(
        f"params {row['params_total'] / 1e6:.2f}M total, {row['params_trainable'] / 1e6:.2f}M trainable; "
        f"train {row['train_seconds']:.0f}s ({row['images_per_second']:.0f} img/s); "
        f"peak memory {row['peak_memory_mb']:.0f} MB; result: {Layout(folder).row(row['run_id'])}"
    )
    if line := row_line(row):
        say(line)


def _json_row(row: dict) -> str:
    """A results row as one JSON line, without the per-sample scores (they are in the Parquet row)."""
    import json

    return json.dumps({k: v for k, v in row.items() if k not in ("test_labels", "test_scores")}, default=str)


def _train_folds(recipe, folder: Path, train_one, force: bool, as_json: bool) -> None:
    """`train FILE.npz --folds K`: every fold in turn, then a line per fold and the mean ± std over folds."""
    from ..cohort import fold_line, summary_line, train_folds

    with interruptible():
        rows = train_folds(recipe, folder, train_one, force=force, log=log)
    for row in rows:
        typer.echo(_json_row(row)) if as_json else say(fold_line(row))
    if not as_json:
        say(summary_line(rows))


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="run id (or a unique prefix of one, or its .parquet file)"),
    split: choices.Split = typer.Option("test", "--split", help="the split to score"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Re-score a saved run's best checkpoint on a split and compare with the recorded metrics (on the data folder
    the run was trained on unless --data-dir or MEDBOOST_DATA names another)."""
    from ..engine import evaluate_run

    split = choices.value(split)
    out = evaluate_run(run, results_dir_of(results_dir), data_dir, split)
    say(f"{out['run_id']} on {split}, checkpoint of epoch {out['best_epoch'] + 1}")
    metrics_table("", [("now", out["acc"], out["auc"]), ("recorded", out["recorded_acc"], out["recorded_auc"])])


def _print_config(recipe) -> None:
    """The resolved recipe as YAML on stdout, with its run id as a comment first (``train --print-config``)."""
    import yaml

    typer.echo(f"# run id: {recipe.run_id()}")
    typer.echo(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), nl=False)
