"""The ``medboost`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .allocator import CHOICES as ALLOCATORS
from .allocator import start_on
from .errors import EXIT_CTRL_C, EXIT_INTERNAL, ConfigError, MedboostError, explain

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer runs on click
    from click.exceptions import ClickException

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


# --backbone and --booster offer the names registered in models/ and recipes.BOOSTER_MODES: --help lists them, the
# shell completes them, a typo is a usage error, and a new backbone appears without touching the CLI. Reading the
# registries imports torch (seconds), so main() swaps these placeholders for the registries' Enums only when the
# command line names a command that has the options (typer reads the annotations when main() builds the commands):
# `medboost --help`, `--version` and the other commands' completion stay instant.
BackboneName: type = str
BoosterMode: type = str
CHOICE_COMMANDS = {"train", "bench"}


@cache
def registry_choices() -> tuple[type[Enum], type[Enum]]:
    """(backbone names, booster modes) as case-sensitive Enums."""
    from .models.backbones import BACKBONES
    from .recipes import BOOSTER_MODES

    return (Enum("BackboneName", {n: n for n in BACKBONES}, type=str),
            Enum("BoosterMode", {n: n for n in BOOSTER_MODES}, type=str))


def _use_registry_choices(words: list[str]) -> None:
    """The registries' choices for --backbone and --booster if ``words`` (the arguments, or the words being
    completed) name a command that has them."""
    global BackboneName, BoosterMode
    if CHOICE_COMMANDS & set(words):
        BackboneName, BoosterMode = registry_choices()


def _value(choice) -> Optional[str]:
    return getattr(choice, "value", choice)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"medboost {__version__}", highlight=False)
        raise typer.Exit()


AllocatorName = Enum("AllocatorName", {n: n for n in ALLOCATORS}, type=str)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
    allocator: AllocatorName = typer.Option(
        "auto", "--allocator", envvar="MEDBOOST_ALLOCATOR", show_envvar=True,
        help="host-memory allocator for train, evaluate, ablate and bench: auto (tcmalloc where installed), "
             "system, tcmalloc or jemalloc; chosen by starting the command again with LD_PRELOAD"),
) -> None:
    """Benchmark whether a frozen language-model layer boosts biomedical image classifiers (R-LLM on MedMNIST)."""


ALLOCATOR_COMMANDS = {"train", "evaluate", "ablate", "bench"}


def _allocator_choice(words: list[str]) -> str | None:
    """``--allocator``'s value among the options before the command (typer checks it again), else
    ``MEDBOOST_ALLOCATOR``, else auto; None when the command does not train or measure (no restart for them)."""
    choice = os.environ.get("MEDBOOST_ALLOCATOR", "auto")
    for i, word in enumerate(words):
        if word.startswith("--allocator="):
            choice = word.split("=", 1)[1]
        elif word == "--allocator" and i + 1 < len(words):
            choice = words[i + 1]
        elif not word.startswith("-") and (i == 0 or words[i - 1] != "--allocator"):
            return choice if word in ALLOCATOR_COMMANDS else None
    return None


@contextmanager
def _interruptible(go_on: str | None = None):
    """Ctrl-C or SIGTERM (``errors.Interrupted``) while training: one line saying how to go on (``go_on``: for a
    command that resumes by itself, unlike ``train``), exit 130 or 143 (typer would otherwise exit 130 silently)."""
    try:
        yield
    except KeyboardInterrupt as e:
        kind, message, code = explain(e, go_on) if go_on else explain(e)
        err_console.print(f"[bold red]{kind}[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(code) from None


def _log(message: str) -> None:
    err_console.print(message, soft_wrap=True, highlight=False)


def _say(message: str) -> None:
    console.print(message, soft_wrap=True, highlight=False)


def _metrics_table(first: str, rows: list[tuple[str, float, float]]) -> None:
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


def _common_flags(*values) -> list[tuple[str, str, object]]:
    """(label, key, value) for load_recipe, in COMMON_KEYS' order; unset options are skipped there."""
    return [(option, key, value) for (option, key, _), value in zip(COMMON_KEYS, values)]


def _results_dir(arg: Optional[Path]) -> Path:
    return Path(arg or os.environ.get("MEDBOOST_RESULTS") or "results")


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
    from .data import data_dir_from, download as fetch
    from .tasks import resolve_task

    folder = data_dir_from(data_dir)
    bar = err_console if sys.stderr.isatty() and not quiet else None
    try:
        for name in tasks:
            fetch(resolve_task(name), size, folder, log=_say, console=bar, mirror=mirror)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: the .part file keeps what arrived; the same command resumes it",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CTRL_C) from None


@app.command()
def train(
    task: str = typer.Argument(..., help="short name (breast, derma, ...), medmnist flag, or a cohort file (.npz from "
                               "`medboost prepare dicom`)"),
    booster: Optional[BoosterMode] = typer.Option(None, "--booster", help="booster mode (default: the recipe's)"),
    model: Optional[str] = typer.Option(None, "--model", help="rllm (backbone + booster, the default) or pneumollm "
                                        "(PneumoLLM: its recipes/models/pneumollm.yaml and the pneumollm.* keys)"),
    backbone: Optional[BackboneName] = typer.Option(None, "--backbone", help="backbone (default: the recipe's)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed, 0 <= seed < 2**32 (default: the recipe's, 0)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="e.g. cpu: a laptop-sized configuration"),
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
    devices: Optional[int] = typer.Option(None, "--devices", min=1, help="train this one run data-parallel in N "
                                          "processes on this machine, one per GPU (or N CPU processes); torchrun "
                                          "starts them on several machines (README)"),
) -> None:
    """Train a classifier with or without the booster; select on val, score test once, write a results row."""
    from . import distributed
    from .data import data_dir_from
    from .engine import train as run_training
    from .progress import RichReporter
    from .recipes import load_recipe
    from .results import ResultsDir as Layout
    from .trackers import make_reporter, resolve_tracks

    flags = [("--booster", "booster.mode", _value(booster)), ("--model", "model", model),
             ("--backbone", "backbone.name", _value(backbone)),
             ("--seed", "seed", seed), ("--folds", "data.folds", folds), ("--fold", "data.fold", fold)]
    flags += _common_flags(epochs, lr, batch_size, llm, layer)
    folder, tracks = _results_dir(results_dir), resolve_tracks(track)
    with _interruptible(), distributed.session() as world:  # several processes: one reports an error, all stop
        recipe = load_recipe(task, preset=preset, flags=flags, sets=sets, recipe_file=recipe_file)
        if devices and devices > 1 and world.size == 1:  # start the processes, which run this same command
            raise typer.Exit(distributed.launch_local(devices, sys.argv[1:]))
        if devices and world.size > 1 and devices != world.local_size:
            raise ConfigError(f"--devices {devices} but the launcher started {world.local_size} processes on this "
                              f"node; leave --devices out under torchrun")
        main = world.is_main  # prints, shows progress and tracks; the other processes stay silent

        def train_one(one):
            progress = RichReporter(err_console) if main and not quiet else None
            reporter = make_reporter(one, folder, tracks, progress, log=_log) if main else None
            return run_training(one, data_dir_from(data_dir), folder, resume=resume, force=force, reporter=reporter,
                                log=_log if main else (lambda message: None))

        if folds is not None and fold is None:
            if world.size > 1:
                raise ConfigError("--folds without --fold trains the folds one after the other in one process; with "
                                  "several processes train one fold at a time: --folds K --fold F")
            _train_folds(recipe, folder, train_one, force, as_json)
            return
        row = train_one(recipe)
    if not main:
        return
    if as_json:
        typer.echo(_json_row(row))
        return
    _say(f"{row['run_id']}: best epoch {row['best_epoch'] + 1} of {row['epochs_done']} by val {row['select_metric']}")
    _metrics_table("split", [("val", row["val_acc"], row["val_auc"]), ("test", row["test_acc"], row["test_auc"])])
    _say(
        f"params {row['params_total'] / 1e6:.2f}M total, {row['params_trainable'] / 1e6:.2f}M trainable; "
        f"train {row['train_seconds']:.0f}s ({row['images_per_second']:.0f} img/s); "
        f"peak memory {row['peak_memory_mb']:.0f} MB; result: {Layout(folder).row(row['run_id'])}"
    )


def _json_row(row: dict) -> str:
    """A results row as one JSON line, without the per-sample scores (they are in the Parquet row)."""
    import json

    return json.dumps({k: v for k, v in row.items() if k not in ("test_labels", "test_scores")}, default=str)


def _train_folds(recipe, folder: Path, train_one, force: bool, as_json: bool) -> None:
    """`train FILE.npz --folds K`: every fold in turn, then a line per fold and the mean ± std over folds."""
    from .cohort import fold_line, summary_line, train_folds

    with _interruptible():
        rows = train_folds(recipe, folder, train_one, force=force, log=_log)
    for row in rows:
        typer.echo(_json_row(row)) if as_json else _say(fold_line(row))
    if not as_json:
        _say(summary_line(rows))


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="run id (or a unique prefix of one, or its .parquet file)"),
    split: str = typer.Option("test", "--split", help="val or test"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Re-score a saved run's best checkpoint on a split and compare with the recorded metrics."""
    from .data import data_dir_from
    from .engine import evaluate_run

    if split not in ("val", "test"):
        raise ConfigError(f"--split {split}: choose val or test")
    out = evaluate_run(run, _results_dir(results_dir), data_dir_from(data_dir), split)
    _say(f"{out['run_id']} on {split}, checkpoint of epoch {out['best_epoch'] + 1}")
    _metrics_table("", [("now", out["acc"], out["auc"]), ("recorded", out["recorded_acc"], out["recorded_auc"])])


CLUSTER = "Cluster (--launcher slurm or submitit-local; also from --profile)"


@app.command()
def ablate(
    study: str = typer.Argument(..., help="main2d, main3d, capacity, residual, control or layers (recipes/studies/)"),
    tasks: Optional[list[str]] = typer.Option(None, "--tasks", help="only these tasks (repeatable)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds 0..N-1 per configuration"),
    preset: Optional[str] = typer.Option(None, "--preset", help="e.g. cpu"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs (and, for slurm, the sbatch script), "
                                 "train and submit nothing"),
    sets: list[str] = typer.Option([], "--set", help="override a recipe key in every run (repeatable)"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    track: list[str] = Track,
    epochs: Optional[int] = Epochs,
    lr: Optional[float] = Lr,
    batch_size: Optional[int] = BatchSize,
    llm: Optional[str] = Llm,
    layer: Optional[int] = Layer,
    launcher: str = typer.Option("local", "--launcher", help="local: this machine; slurm: a job array through "
                                 "submitit; submitit-local: submitit's local executor (to try a cluster set-up)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="runs at once. local: worker processes, one "
                                       "GPU each (default 1: one run after the other in this process); slurm: "
                                       "array jobs running at once (default: Slurm's limit)"),
    profile: Optional[Path] = typer.Option(None, "--profile", help="YAML file with the options below",
                                           rich_help_panel=CLUSTER),
    partition: Optional[str] = typer.Option(None, "--partition", rich_help_panel=CLUSTER),
    gpus_per_run: Optional[int] = typer.Option(None, "--gpus-per-run", rich_help_panel=CLUSTER),
    cpus_per_run: Optional[int] = typer.Option(None, "--cpus-per-run", rich_help_panel=CLUSTER,
                                               help="cores per job, also the run's torch threads"),
    mem: Optional[str] = typer.Option(None, "--mem", help="memory per job, e.g. 32G", rich_help_panel=CLUSTER),
    time: Optional[str] = typer.Option(None, "--time", help="time limit per job: minutes, H:MM:SS or D-HH:MM:SS "
                                       "(default 24 h); a longer run is requeued and resumes", rich_help_panel=CLUSTER),
    account: Optional[str] = typer.Option(None, "--account", rich_help_panel=CLUSTER),
    qos: Optional[str] = typer.Option(None, "--qos", rich_help_panel=CLUSTER),
    wait: bool = typer.Option(False, "--wait", help="slurm: wait for the jobs and show how each run ended",
                              rich_help_panel=CLUSTER),
) -> None:
    """Expand a study into runs and train those not already completed in the results (reruns skip them), here
    or on a cluster."""
    from .data import data_dir_from
    from .launchers import cluster_options, launch
    from .progress import RichReporter
    from .studies import expand, load_study
    from .trackers import resolve_tracks

    flags = dict(partition=partition, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, mem=mem, time=time,
                 account=account, qos=qos)
    if launcher == "local" and (profile or wait or any(v is not None for v in flags.values())):
        raise ConfigError("--profile, --wait and the cluster options apply to --launcher slurm or submitit-local")
    options = cluster_options(profile, flags)
    common = [f"{key}={value}" for _, key, value in _common_flags(epochs, lr, batch_size, llm, layer) if value is not None]
    plan = expand(load_study(study, preset), tasks=tasks, seeds=seeds, preset=preset, extra_sets=common + sets)
    with _interruptible(go_on="run the same command again to continue (interrupted runs resume)"):
        launch(launcher, plan, data_dir_from(data_dir), _results_dir(results_dir), jobs=jobs, options=options,
               dry_run=dry_run, wait=wait, reporter=None if quiet else RichReporter(err_console), say=_say, log=_log,
               show=console.print, title=study, tracks=tuple(resolve_tracks(track)))


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

    from .results import load_results
    from .tasks import resolve_task

    df = load_results(_results_dir(results_dir), columns=RUN_COLUMNS, status=status)
    if task is not None:
        df = df[df["task"] == resolve_task(task).short]
    records = json.loads(df.to_json(orient="records"))
    if as_json:
        typer.echo(json.dumps(records, indent=1))
        return
    table = Table(title=f"{len(records)} runs in {_results_dir(results_dir)}")
    shown = ["run_id", "status", "seed", "epochs_done", "val_auc", "test_acc", "test_auc", "precision"]
    for col in shown:
        table.add_column(col, justify="left" if col in ("run_id", "status", "precision") else "right")
    for r in records:
        table.add_row(*[f"{r[c]:.4f}" if isinstance(r[c], float) else "" if r[c] is None else str(r[c]) for c in shown])
    console.print(table)


report_app = typer.Typer(help="Regenerate the paper's Tables 1-6, our control and layer studies, statistics and "
                                "figures from the results alone; `report gradcam RUN` draws Grad-CAM maps.")
app.add_typer(report_app, name="report")


ReportOut = typer.Option(None, "--out", help="output folder (default: beside the results folder: results -> "
                         "reports, NAME -> NAME-reports)")


@report_app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    markdown: bool = typer.Option(False, "--markdown", help="write report.md and print it (the default format)"),
    latex: bool = typer.Option(False, "--latex", help="write report.tex (booktabs; compiles with pdflatex)"),
    html: bool = typer.Option(False, "--html", help="write report.html"),
    out: Optional[Path] = ReportOut,
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds the fill-in commands ask for"),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="bootstrap replicates per interval"),
    results_dir: Optional[Path] = ResultsDir,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="MedMNIST folder the fill-in commands name "
                                            "(they read $MEDBOOST_DATA, else ~/.medmnist, without it)"),
) -> None:
    if ctx.invoked_subcommand:
        return
    from .report import default_out_dir, make_report

    folder = _results_dir(results_dir)
    out = out or default_out_dir(folder)
    given = [(option, str(ctx.params[name])) for option, name in (("--results-dir", "results_dir"),
                                                                    ("--data-dir", "data_dir"))
             if _on_command_line(ctx, name)]
    formats = [f for f, on in (("markdown", markdown), ("latex", latex), ("html", html)) if on] or ["markdown"]
    written = make_report(folder, out, formats, seeds=seeds, n_boot=n_boot, command_options=tuple(p for pair in given for p in pair))
    if "markdown" in written and markdown:
        typer.echo(written["markdown"].read_text(), nl=False)  # as written, byte for byte: a pipe gets the file
    for fmt, path in written.items():
        _log(f"{fmt}: {path}")
    _log(f"traces: {out / 'cells.csv'}, {out / 'pairs.csv'}")


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter came from the command line (not its default or its environment variable)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@report_app.command("gradcam")
def gradcam(
    run: str = typer.Argument(..., help="a 2D run id (baseline or booster); its paired run must exist too"),
    images: int = typer.Option(4, "--images", min=1, help="how many test images"),
    out: Optional[Path] = ReportOut,
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Grad-CAM maps of a baseline run and its booster run, side by side (the paper's Figure 3)."""
    from .data import data_dir_from
    from .gradcam import gradcam_figure
    from .report import default_out_dir

    folder = _results_dir(results_dir)
    for path in gradcam_figure(run, folder, data_dir_from(data_dir), images, out or default_out_dir(folder)):
        _say(str(path))


prepare_app = typer.Typer(help="Convert raw images into one file medboost trains on (`prepare dicom`).",
                            no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


@prepare_app.command("dicom")
def prepare_dicom(
    folder: Path = typer.Argument(..., help="folder of DICOM files (any layout; labels.csv names them)"),
    labels: Path = typer.Option(..., "--labels", help="CSV with header file,patient_id,label (file relative to "
                                "FOLDER, label a class index)"),
    out: Path = typer.Option(..., "--out", help="cohort file to write (.npz)"),
    size: int = typer.Option(224, "--size", help="output images are SIZE x SIZE"),
    masks: Optional[Path] = typer.Option(None, "--masks", help="folder of lung masks (FILE.png or .npy, same "
                                         "relative paths): crop each image to its mask's bounding box"),
    margin: float = typer.Option(0.05, "--margin", help="widen the mask's box by this fraction of its height/width "
                                 "on each side (0 = the paper's rectangle)"),
    aspect: str = typer.Option("stretch", "--aspect", help="stretch (the paper) or pad (black borders, shapes kept)"),
) -> None:
    """Window (tags' default), invert MONOCHROME1, crop, resize and store DICOMs with labels and patient ids."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .dicom import prepare_dicom as prepare

    with Progress(TextColumn("[bold]prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("prepare", total=None)
        summary = prepare(folder, labels, out, size=size, masks=masks, margin=margin, aspect=aspect,
                          log=lambda line: bar.console.print(line, soft_wrap=True, highlight=False, markup=False),
                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    for line in summary.lines():
        _say(line)


@app.command()
def bench(
    task: Optional[str] = typer.Argument(None, help="a task's recipe to measure (or use --shape)"),
    shape: Optional[str] = typer.Option(None, "--shape", help="the paper's shapes: 2d-224 (ViT-S/16) or 3d-28"),
    model: Optional[str] = typer.Option(None, "--model", help="rllm (default) or pneumollm (at --shape 2d-224: CLIP "
                                        "ViT-L/14 + every LLaMA-7B layer, random weights)"),
    boosters: list[BoosterMode] = typer.Option([], "--booster", help="R-LLM: modes to compare (repeatable; default "
                                               "none and rllm)"),
    variants: list[str] = typer.Option([], "--variant", help="PneumoLLM: variants to compare (repeatable; pneumollm, "
                                       "no-llm, simplified; default pneumollm and no-llm)"),
    batch: Optional[int] = typer.Option(None, "--batch", help="batch size (default: the recipe's)"),
    llm: Optional[str] = typer.Option(None, "--llm", help="F_L source; random:llama-7b = LLaMA-7B's shape, random weights"),
    backbone: Optional[BackboneName] = typer.Option(None, "--backbone", help="backbone (default: the recipe's)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="e.g. cpu"),
    warmup: int = typer.Option(2, "--warmup", min=0, help="untimed steps first"),
    steps: int = typer.Option(5, "--steps", min=1, help="timed steps, each timed on its own (median and IQR)"),
    sets: list[str] = typer.Option([], "--set", help="override any recipe key (repeatable)"),
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Measure each booster mode's (PneumoLLM: each variant's) train step and eval throughput, memory, parameters
    and FLOPs, side by side; each in its own process."""
    from .bench import bench_names, bench_recipe, bench_table, run_bench

    recipe = bench_recipe(task, shape, llm, batch, sets, preset=preset, backbone=_value(backbone), model=model)
    label = shape or task
    names = bench_names(recipe, [_value(b) for b in boosters], variants)
    rows = run_bench(recipe, names, warmup, steps, _results_dir(results_dir), label, log=_log)
    console.print(bench_table(rows, label))


def _fail(kind: str, message: str, code: int):
    err_console.print(f"[bold red]{kind}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _usage_error(e: ClickException) -> str:
    """A command-line mistake (missing argument, bad value or choice, unknown option) as one line that names the
    command's --help, instead of typer's usage box."""
    message = " ".join(line.strip() for line in e.format_message().splitlines() if line.strip())
    ctx = getattr(e, "ctx", None)
    return f"{message.rstrip('.')}; see `{ctx.command_path} --help`" if ctx is not None else message


def main() -> None:
    """The console script: every error ends in one line on stderr and the exit code of its class (errors.py);
    command-line mistakes are configuration errors (exit 2)."""
    completing = os.environ.get("COMP_WORDS", "") + " " + os.environ.get("_TYPER_COMPLETE_ARGS", "")
    choice = None if completing.strip() else _allocator_choice(sys.argv[1:])
    if choice is not None:  # before anything else: os.execve on the chosen allocator, or nothing
        try:
            start_on(choice)
        except MedboostError as e:
            _fail(e.kind, str(e), e.exit_code)
    _use_registry_choices(sys.argv[1:] + completing.split())
    try:
        # click's errors come here instead of typer's multi-line box; "medboost" in usage lines and completion
        # whether started as the console script or as python -m medboost_cli
        code = app(prog_name="medboost", standalone_mode=False)
    except MedboostError as e:
        _fail(e.kind, str(e), e.exit_code)
    except ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `medboost`: the help is printed already
            sys.exit(e.exit_code)
        _fail(ConfigError.kind, _usage_error(e), ConfigError.exit_code)
    except typer.Abort:  # end of input at a prompt
        _fail("aborted", "no input", EXIT_INTERNAL)
    except Exception as e:  # a bug: say so in one line; MEDBOOST_DEBUG=1 shows where
        if os.environ.get("MEDBOOST_DEBUG"):
            raise
        kind, message, code = explain(e)
        _fail(kind, message, code)
    if isinstance(code, int) and code:  # typer.Exit(code) in non-standalone mode: Ctrl-C (130), SIGTERM (143)
        sys.exit(code)


if __name__ == "__main__":
    main()
