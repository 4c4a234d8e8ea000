"""The ``medboost`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, MedboostError, explain

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark whether a frozen language-model layer boosts biomedical image classifiers (R-LLM on MedMNIST).",
)
# Wide enough for the tables when the output is a file or a pipe (rich would use 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DataDir = typer.Option(None, "--data-dir", help="MedMNIST folder (default: $MEDBOOST_DATA, else ~/.medmnist)")
ResultsDir = typer.Option(None, "--results-dir", help="results folder (default: $MEDBOOST_RESULTS, else ./results)")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"medboost {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
) -> None:
    """Benchmark whether a frozen language-model layer boosts biomedical image classifiers (R-LLM on MedMNIST)."""


@contextmanager
def _interruptible():
    """Ctrl-C or SIGTERM (``errors.Interrupted``) while training: one line saying how to go on, exit 130 or 143
    (typer would otherwise exit 130 silently)."""
    try:
        yield
    except KeyboardInterrupt as e:
        kind, message, code = explain(e)
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
) -> None:
    """Download MedMNIST files (medmnist's URLs) and check their MD5, also for files already present."""
    from .data import data_dir_from, download as fetch
    from .tasks import resolve_task

    folder = data_dir_from(data_dir)
    for name in tasks:
        fetch(resolve_task(name), size, folder, log=_say)


@app.command()
def train(
    task: str = typer.Argument(..., help="short name (breast, derma, ...) or medmnist flag"),
    booster: Optional[str] = typer.Option(None, "--booster", help="none, rllm, out, hybrid or mlp"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="registered backbone, e.g. vit-s, vit-mini"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed (default: the recipe's, 0)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="e.g. cpu: a laptop-sized configuration"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
    sets: list[str] = typer.Option([], "--set", help="override any recipe key: --set train.lr=1e-3 (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="continue this run from its last epoch checkpoint"),
    force: bool = typer.Option(False, "--force", help="train a run that is already completed again, replacing its result"),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="use this YAML file instead of recipes/TASK.yaml"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    epochs: Optional[int] = Epochs,
    lr: Optional[float] = Lr,
    batch_size: Optional[int] = BatchSize,
    llm: Optional[str] = Llm,
    layer: Optional[int] = Layer,
    as_json: bool = typer.Option(False, "--json", help="print the final results row as JSON (per-sample scores left "
                                 "out; they are in the Parquet row) instead of the tables"),
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

    flags = [("--booster", "booster.mode", booster), ("--backbone", "backbone.name", backbone), ("--seed", "seed", seed)]
    flags += _common_flags(epochs, lr, batch_size, llm, layer)
    with _interruptible(), distributed.session() as world:  # several processes: one reports an error, all stop
        recipe = load_recipe(task, preset=preset, flags=flags, sets=sets, recipe_file=recipe_file)
        if devices and devices > 1 and world.size == 1:  # start the processes, which run this same command
            raise typer.Exit(distributed.launch_local(devices, sys.argv[1:]))
        if devices and world.size > 1 and devices != world.local_size:
            raise ConfigError(f"--devices {devices} but the launcher started {world.local_size} processes on this "
                              f"node; leave --devices out under torchrun")
        main = world.is_main  # prints and shows progress; the other processes stay silent
        row = run_training(recipe, data_dir_from(data_dir), _results_dir(results_dir), resume=resume, force=force,
                           reporter=RichReporter(err_console) if main and not quiet else None,
                           log=_log if main else (lambda message: None))
    if not main:
        return
    folder = _results_dir(results_dir)
    if as_json:
        import json

        typer.echo(json.dumps({k: v for k, v in row.items() if k not in ("test_labels", "test_scores")}, default=str))
        return
    _say(f"{row['run_id']}: best epoch {row['best_epoch'] + 1} of {row['epochs_done']} by val {row['select_metric']}")
    _metrics_table("split", [("val", row["val_acc"], row["val_auc"]), ("test", row["test_acc"], row["test_auc"])])
    _say(
        f"params {row['params_total'] / 1e6:.2f}M total, {row['params_trainable'] / 1e6:.2f}M trainable; "
        f"train {row['train_seconds']:.0f}s ({row['images_per_second']:.0f} img/s); "
        f"peak memory {row['peak_memory_mb']:.0f} MB; result: {Layout(folder).row(row['run_id'])}"
    )


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


@app.command()
def ablate(
    study: str = typer.Argument(..., help="main2d, main3d, capacity, residual, control or layers (recipes/studies/)"),
    tasks: Optional[list[str]] = typer.Option(None, "--tasks", help="only these tasks (repeatable)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds 0..N-1 per configuration"),
    preset: Optional[str] = typer.Option(None, "--preset", help="e.g. cpu"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and their commands, train nothing"),
    sets: list[str] = typer.Option([], "--set", help="override a recipe key in every run (repeatable)"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    epochs: Optional[int] = Epochs,
    lr: Optional[float] = Lr,
    batch_size: Optional[int] = BatchSize,
    llm: Optional[str] = Llm,
    layer: Optional[int] = Layer,
) -> None:
    """Expand a study into runs and train those not already completed in the results (reruns skip them)."""
    from .data import data_dir_from
    from .engine import train as run_training
    from .progress import RichReporter
    from .studies import completed_run_ids, expand, load_study, run_study

    common = [f"{key}={value}" for _, key, value in _common_flags(epochs, lr, batch_size, llm, layer) if value is not None]
    plan = expand(load_study(study, preset), tasks=tasks, seeds=seeds, preset=preset, extra_sets=common + sets)
    folder = _results_dir(results_dir)
    if dry_run:
        done = completed_run_ids(folder)
        for run in plan:
            _say(f"{'done' if run.run_id in done else 'todo'}  {run.command()}")
        return

    def train_one(recipe, data, results, resume):
        row = run_training(recipe, data, results, resume=resume, reporter=None if quiet else RichReporter(err_console),
                           log=_log)
        _say(f"{row['run_id']}: test ACC {row['test_acc']:.4f} AUC {row['test_auc']:.4f}")

    with _interruptible():
        counts = run_study(plan, data_dir_from(data_dir), folder, train_one, log=_say)
    _say(f"{study}: {counts['trained']} trained, {counts['skipped']} already completed")


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


@report_app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    markdown: bool = typer.Option(False, "--markdown", help="write report.md and print it (the default format)"),
    latex: bool = typer.Option(False, "--latex", help="write report.tex (booktabs; compiles with pdflatex)"),
    html: bool = typer.Option(False, "--html", help="write report.html"),
    out: Path = typer.Option(Path("reports"), "--out", help="output folder (with cells.csv, pairs.csv, figures)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds the fill-in commands ask for"),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="bootstrap replicates per interval"),
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    if ctx.invoked_subcommand:
        return
    from .report import make_report

    formats = [f for f, on in (("markdown", markdown), ("latex", latex), ("html", html)) if on] or ["markdown"]
    written = make_report(_results_dir(results_dir), out, formats, seeds=seeds, n_boot=n_boot)
    if "markdown" in written and markdown:
        console.print(written["markdown"].read_text(), markup=False, highlight=False, soft_wrap=True)
    for fmt, path in written.items():
        _log(f"{fmt}: {path}")
    _log(f"traces: {out / 'cells.csv'}, {out / 'pairs.csv'}")


@report_app.command("gradcam")
def gradcam(
    run: str = typer.Argument(..., help="a 2D run id (baseline or booster); its paired run must exist too"),
    images: int = typer.Option(4, "--images", min=1, help="how many test images"),
    out: Path = typer.Option(Path("reports"), "--out", help="output folder"),
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Grad-CAM maps of a baseline run and its booster run, side by side (the paper's Figure 3)."""
    from .data import data_dir_from
    from .gradcam import gradcam_figure

    for path in gradcam_figure(run, _results_dir(results_dir), data_dir_from(data_dir), images, out):
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
    boosters: list[str] = typer.Option(["none", "rllm"], "--booster", help="modes to compare (repeatable)"),
    batch: Optional[int] = typer.Option(None, "--batch", help="batch size (default: the recipe's)"),
    llm: Optional[str] = typer.Option(None, "--llm", help="F_L source; random:llama-7b = LLaMA-7B's shape, random weights"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="registered backbone"),
    preset: Optional[str] = typer.Option(None, "--preset", help="e.g. cpu"),
    warmup: int = typer.Option(2, "--warmup", min=0, help="untimed steps first"),
    steps: int = typer.Option(5, "--steps", min=1, help="timed steps"),
    sets: list[str] = typer.Option([], "--set", help="override any recipe key (repeatable)"),
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Measure each booster mode's train step and eval throughput, memory, parameters and FLOPs, side by side."""
    from .bench import bench_recipe, run_bench

    recipe = bench_recipe(task, shape, llm, batch, sets, preset=preset, backbone=backbone)
    label = shape or task
    rows = run_bench(recipe, boosters, warmup, steps, _results_dir(results_dir), label, log=_log)
    table = Table(title=f"{label}: batch {recipe.train.batch_size}, {rows[0]['device']}, {rows[0]['precision']}; "
                        f"{rows[0]['matmul_dtype']} matmul {rows[0]['matmul_tflops']:.3f} TFLOP/s")
    columns = ["booster", "params (M)", "trainable (M)", "GMACs/img", "train ms/step", "train img/s", "eval img/s",
               "peak MB", "step TFLOP/s", "step % matmul", "F_L TFLOP/s", "F_L % matmul"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        layer = (f"{r['layer_tflops']:.3f}", f"{100 * r['layer_fraction_of_matmul']:.0f}%") if r["layer_tflops"] else ("-", "-")
        table.add_row(r["booster"], f"{r['params_total'] / 1e6:.1f}", f"{r['params_trainable'] / 1e6:.1f}",
                      f"{r['gmacs_per_image']:.2f}", f"{r['train_ms_per_step']:.0f}", f"{r['train_images_per_second']:.1f}",
                      f"{r['eval_images_per_second']:.1f}", f"{r['peak_memory_mb']:.0f}", f"{r['step_tflops']:.3f}",
                      f"{100 * r['step_fraction_of_matmul']:.0f}%", *layer)
    console.print(table)


def main() -> None:
    """The console script: every error ends in one line on stderr and the exit code of its class (errors.py)."""
    try:
        app()
    except MedboostError as e:
        err_console.print(f"[bold red]{e.kind}:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except Exception as e:  # a bug: say so in one line; MEDBOOST_DEBUG=1 shows where
        if os.environ.get("MEDBOOST_DEBUG"):
            raise
        kind, message, code = explain(e)
        err_console.print(f"[bold red]{kind}:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
