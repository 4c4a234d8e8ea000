"""One run as every launcher trains it: ``Job`` (what a process needs), ``run_job`` (train it, logging to
``logs/RUN_ID.log``) and ``Outcome`` (how it ended), plus where runs go on this machine (threads, GPUs).

``run_job`` returns an ``Outcome`` (trained, skipped, busy, failed or interrupted) instead of raising, so one bad
run does not stop the others. What makes running many at once safe is not here but in the results folder: one
Parquet file per run, and a lock per run taken by ``engine.train`` itself (``locks.py``), so no launcher, host or
second command can train a run that is being trained.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable

from rich.console import Console

from ..errors import Interrupted, MedboostError
from ..fileio import append_log
from ..locks import RunLocked
from ..recipes import Recipe
from ..results import ResultsDir, read_row
from ..studies import PlannedRun


@dataclass(frozen=True)
class Job:
    """What a process needs to train one planned run (picklable: it travels to workers and cluster nodes)."""

    run_id: str
    command: str  # the equivalent `medboost train ...`, for the logs
    recipe: Recipe
    data_dir: Path
    results_dir: Path
    threads: int | None = None  # torch threads when the recipe sets no train.threads
    device: str | None = None  # CUDA_VISIBLE_DEVICES for this run; None leaves the environment's
    tracks: tuple[str, ...] = ()  # experiment trackers (--track), each run logs to them (trackers.py)

    @classmethod
    def of(cls, run: PlannedRun, data_dir: Path, results_dir: Path, threads: int | None = None,
           tracks: tuple[str, ...] = ()) -> Job:
        return cls(run.run_id, run.command(), run.recipe, Path(data_dir).absolute(), Path(results_dir).absolute(),
                   threads, tracks=tuple(tracks))


@dataclass(frozen=True)
class Outcome:
    """How a run ended: trained, skipped (completed already), busy (another process trains it), failed or
    interrupted; ``error`` is one line, the log file has the rest."""

    run_id: str
    status: str
    seconds: float = 0.0
    test_acc: float | None = None
    test_auc: float | None = None
    error: str | None = None
    exit_code: int = 0  # the error's (errors.py), for the launcher's own exit
    log: str | None = None
    overhead_s: float | None = None  # a pool worker's start and exit around the run (process, imports)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _error_line(e: BaseException) -> tuple[str, int]:
    if isinstance(e, MedboostError):
        return f"{e.kind}: {e}", e.exit_code
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}", 1


class RunLog:
    """A run's log file (``note``), and what the run itself says (``log``: also shown through ``echo``)."""

    def __init__(self, file: IO[str], echo: Callable[[str], None] | None):
        self.console = Console(file=file, width=160, force_terminal=False, color_system=None)
        self.echo = echo

    def note(self, message: str) -> None:
        self.console.print(f"{_now()} {message}", markup=False, highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        self.note(message)
        if self.echo:
            self.echo(message)

    def traceback(self) -> None:
        self.console.print(traceback.format_exc(), markup=False, highlight=False)


def _capture(file: IO[str]) -> None:
    """This process's stdout and stderr (file descriptors 1 and 2) into ``file``."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(file.fileno(), 1)
    os.dup2(file.fileno(), 2)


def _job_recipe(job: Job) -> Recipe:
    """The recipe with the job's torch threads where the recipe sets none."""
    recipe = job.recipe
    if job.threads and recipe.train.threads is None:
        recipe = recipe.model_copy(deep=True)
        recipe.train.threads = job.threads  # not part of the run id: where it runs, not what
    return recipe


def run_job(job: Job, resume: bool | None = None, *, reporter: Any = None, echo: Callable[[str], None] | None = None,
            capture: bool = False, raise_errors: bool = False,
            on_end: Callable[[Outcome], None] = lambda _: None) -> Outcome:
    """Train ``job``'s run in this process, appending its log lines, epochs and any traceback to
    ``logs/RUN_ID.log``. ``resume`` None: resume when the run has a last.pt. ``reporter``: the progress display
    (default: epoch lines in the log); ``echo``: also show the log lines there; ``capture``: send this process's
    stdout and stderr to the log too (a worker process of its own); ``raise_errors``: raise a failure or an
    interruption after logging it and calling ``on_end`` with its outcome (the sequential launcher stops at the
    first failure)."""
    path = ResultsDir(job.results_dir).log(job.run_id)
    start = time.perf_counter()
    with append_log(path) as f:
        if capture:
            _capture(f)
        run_log = RunLog(f, echo)
        recipe = _job_recipe(job)
        gpu = f", CUDA_VISIBLE_DEVICES={job.device}" if job.device is not None else ""
        run_log.note(f"{job.command} on {socket.gethostname()}, pid {os.getpid()}, "
                     f"{recipe.train.threads or 'default'} threads{gpu}")

        def ended(status: str, **values: Any) -> Outcome:
            outcome = Outcome(job.run_id, status, time.perf_counter() - start, log=str(path), **values)
            on_end(outcome)
            return outcome

        outcome, error = _train_logged(job, recipe, resume, reporter, run_log, ended)
        if error is not None and raise_errors:
            raise error
        return outcome


def _train_logged(job: Job, recipe: Recipe, resume: bool | None, reporter: Any, run_log: RunLog,
                  ended: Callable[..., Outcome]) -> tuple[Outcome, BaseException | None]:
    """``engine.train`` for the job, every ending logged and turned into an ``Outcome``; a failure or an
    interruption also comes back as the exception that ended the run."""
    from ..engine import train  # torch and the models: imported in the process that trains
    from ..progress import RichReporter
    from ..trackers import make_reporter

    layout = ResultsDir(job.results_dir)
    try:
        done = read_row(layout.root, job.run_id)
        if done is not None and done["status"] == "completed":
            run_log.log(f"{job.run_id} is already completed")
            return ended("skipped", test_acc=done["test_acc"], test_auc=done["test_auc"]), None
        if resume is None:
            resume = layout.last(job.run_id).exists()
        progress = reporter or RichReporter(run_log.console)
        row = train(recipe, job.data_dir, layout.root, resume=resume, log=run_log.log,
                    reporter=make_reporter(recipe, layout.root, list(job.tracks), progress, log=run_log.log))
    except RunLocked as e:  # another process took the run since it was planned: not this launch's to train
        run_log.note(f"skipped: {e}")
        return ended("busy", error=str(e)), None
    except KeyboardInterrupt as e:
        by = e.signal_name if isinstance(e, Interrupted) else "Ctrl-C"
        run_log.note(f"interrupted by {by}; the last finished epoch is saved")
        return ended("interrupted", error=f"interrupted by {by}",
                     exit_code=143 if isinstance(e, Interrupted) else 130), e
    except Exception as e:
        run_log.traceback()
        line, code = _error_line(e)
        run_log.note(f"failed: {line}")
        return ended("failed", error=line, exit_code=code), e
    run_log.note(f"completed: test ACC {row['test_acc']:.4f} AUC {row['test_auc']:.4f}")
    return ended("trained", test_acc=row["test_acc"], test_auc=row["test_auc"]), None


def cpu_threads(parallel: int) -> int:
    """Torch threads per run when ``parallel`` runs share this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, parallel))


def visible_devices() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ([] on a machine without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and not d.strip().startswith("-")]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def round_robin(devices: list[str], n: int) -> list[str | None]:
    """``n`` runs' devices, taking ``devices`` in turn (None for each when there are none)."""
    return [devices[i % len(devices)] if devices else None for i in range(n)]


def jobs_for(runs: list[PlannedRun], data_dir: Path, results_dir: Path, threads: int | None = None,
             tracks: tuple[str, ...] = ()) -> list[Job]:
    return [Job.of(run, data_dir, results_dir, threads, tracks) for run in runs]
