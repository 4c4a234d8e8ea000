"""``medboost ablate``: a study's runs, trained by a registered launcher (``launchers.LAUNCHERS``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import launchers
from . import choices
from .app import (BatchSize, DataDir, Epochs, Layer, Llm, Lr, ResultsDir, Track, app, common_flags, console,
                  err_console, interruptible, log, results_dir_of, say)

CLUSTER = "Cluster (--launcher " + " or ".join(name for name, entry in launchers.LAUNCHERS.items()
                                               if entry.takes_cluster_options) + "; also from --profile)"

Launcher = typer.Option("local", "--launcher", help=launchers.help_text())
Jobs = typer.Option(None, "--jobs", min=1, help="runs at once. local: worker processes, one GPU each (default 1: one "
                    "run after the other in this process); slurm: array jobs running at once (default: Slurm's limit)")
Profile = typer.Option(None, "--profile", help="YAML file with the options below", rich_help_panel=CLUSTER)
Partition = typer.Option(None, "--partition", rich_help_panel=CLUSTER)
GpusPerRun = typer.Option(None, "--gpus-per-run", rich_help_panel=CLUSTER)
CpusPerRun = typer.Option(None, "--cpus-per-run", rich_help_panel=CLUSTER, help="cores per job, also the run's torch "
                          "threads")
Mem = typer.Option(None, "--mem", help="memory per job, e.g. 32G", rich_help_panel=CLUSTER)
Time = typer.Option(None, "--time", help="time limit per job: minutes, H:MM:SS or D-HH:MM:SS (default 24 h); a longer "
                    "run is requeued and resumes", rich_help_panel=CLUSTER)
Account = typer.Option(None, "--account", rich_help_panel=CLUSTER)
Qos = typer.Option(None, "--qos", rich_help_panel=CLUSTER)
Wait = typer.Option(False, "--wait", help="slurm: wait for the jobs and show how each run ended",
                    rich_help_panel=CLUSTER)


@app.command()
def ablate(
    study: str = typer.Argument(..., help="main2d, main3d, capacity, residual, control or layers (recipes/studies/)"),
    tasks: Optional[list[str]] = typer.Option(None, "--tasks", help="only these tasks: a list (breast,pneumonia), "
                                              "or the option repeated"),
    seeds: str = typer.Option("3", "--seeds", help="seeds per configuration: N (seeds 0..N-1), a list (0,2,4) or a "
                               "range (3-5)"),
    preset: Optional[choices.PresetName] = typer.Option(None, "--preset", help="cpu: a laptop-sized configuration"),
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
    launcher: str = Launcher,
    jobs: Optional[int] = Jobs,
    profile: Optional[Path] = Profile,
    partition: Optional[str] = Partition,
    gpus_per_run: Optional[int] = GpusPerRun,
    cpus_per_run: Optional[int] = CpusPerRun,
    mem: Optional[str] = Mem,
    time: Optional[str] = Time,
    account: Optional[str] = Account,
    qos: Optional[str] = Qos,
    wait: bool = Wait,
) -> None:
    """Expand a study into runs and train those not already completed in the results (reruns skip them), here
    or on a cluster."""
    from ..data import data_dir_from
    from ..progress import RichReporter
    from ..studies import expand, load_study
    from ..trackers import resolve_tracks

    flags = dict(partition=partition, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, mem=mem, time=time,
                 account=account, qos=qos)
    launchers.check_options(launchers.launcher_named(launcher),
                            bool(profile or wait or any(v is not None for v in flags.values())))
    options = launchers.cluster_options(profile, flags)
    common = [f"{key}={value}" for _, key, value in common_flags(epochs, lr, batch_size, llm, layer) if value is not None]
    preset, chosen = choices.value(preset), seed_list(seeds)
    spec, folder = load_study(study, preset), results_dir_of(results_dir)
    tasks = [t.strip() for words in tasks for t in words.split(",") if t.strip()] if tasks else None
    plan = [run for run in expand(spec, tasks=tasks, seeds=max(chosen) + 1, preset=preset,
                                  extra_sets=common + sets) if run.seed in chosen]
    with interruptible(go_on="run the same command again to continue (interrupted runs resume)"):
        launchers.launch(launcher, plan, data_dir_from(data_dir), folder, jobs=jobs,
                         options=options, dry_run=dry_run, wait=wait,
                         reporter=None if quiet else RichReporter(err_console), say=say, log=log, show=console.print,
                         title=study, tracks=tuple(resolve_tracks(track)))
    if not dry_run:
        verdict_lines(spec, plan, folder)


def verdict_lines(spec, plan: list, folder: Path) -> None:
    """The verdict of each task and comparison whose runs are completed (medboost_cli.verdict), after the
    launch's summary; nothing for a study without the booster arm or before any pair is complete."""
    from ..verdict import VerdictSettings, plan_verdicts, points

    settings = VerdictSettings()
    verdicts = plan_verdicts(spec, plan, folder, settings)
    if verdicts:
        say(f"verdict ({settings.metric.upper()}, Holm across the tasks run, margin ±{points(settings.margin)}; "
            f"`medboost report` has the rules):")
    for v in verdicts:
        say(f"  {v.line()}")


def seed_list(text: str) -> list[int]:
    """``--seeds``: "N" is seeds 0..N-1; "0,2,4" and "3-5" (and "0,3-5") name the seeds; sorted, each once."""
    from ..errors import ConfigError

    text = str(text).strip()
    try:
        if text.isdigit():
            seeds = list(range(int(text)))
        else:
            seeds = []
            for part in filter(None, (p.strip() for p in text.split(","))):
                low, _, high = part.partition("-")
                seeds += list(range(int(low), int(high or low) + 1))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds {text}: give a count (3: seeds 0, 1, 2), a list (0,2,4) or a range (3-5)")
    return sorted(set(seeds))
