"""Launchers: the runs of a study trained by a pool of local processes or as a Slurm job array (submitit).

Every launcher calls the same function for a run, ``run_job``: ``engine.train`` in the process it runs in, with
the run's log lines, progress and any error appended to ``logs/RUN_ID.log`` in the results folder, returning an
``Outcome`` (trained, skipped, busy, failed or interrupted) instead of raising, so one bad run does not stop the
others. What makes running many at once safe is not here but in the results folder: one Parquet file per run,
and a lock per run taken by ``engine.train`` itself (``locks.py``), so no launcher, host or second command can
train a run that is being trained.

- ``local`` with ``--jobs 1``: the runs one after the other in this process, as ``ablate`` always did.
- ``local`` with ``--jobs N``: at most N worker processes at once, a fresh one per run (so each starts clean
  and a crash takes only its own run), forked from a server that imported torch and the models once
  (``process_context``), each with its own GPU, round-robin over the visible ones, and ``C // N`` torch
  threads on C cores unless the recipe sets ``train.threads``.
- ``slurm``: a submitit job array of the runs still to train, one job per run; a job preempted or out of time
  (Slurm's SIGUSR2, ``signal_delay_s`` before the end) saves its epoch, marks its row interrupted and is requeued
  by submitit's checkpointing, resuming from its last.pt.
- ``submitit-local``: the same submitit code path with submitit's LocalExecutor (local processes, all at once),
  to try a cluster set-up on a workstation.

Cluster options come from the command line and from a profile (``--profile lab.yaml``, ``ClusterOptions``'
keys), the command line winning.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, Interrupted, MedboostError
from .locks import RunLocked
from .recipes import Recipe, read_yaml
from .results import ResultsDir, read_row
from .studies import PlannedRun

LAUNCHERS = ("local", "slurm", "submitit-local")


# ------------------------------------------------------------------------------------------------ one run


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


def run_job(job: Job, resume: bool | None = None, *, reporter: Any = None, echo: Callable[[str], None] | None = None,
            capture: bool = False, raise_errors: bool = False,
            on_end: Callable[[Outcome], None] = lambda _: None) -> Outcome:
    """Train ``job``'s run in this process, appending its log lines, epochs and any traceback to
    ``logs/RUN_ID.log``. ``resume`` None: resume when the run has a last.pt. ``reporter``: the progress display
    (default: epoch lines in the log); ``echo``: also show the log lines there; ``capture``: send this process's
    stdout and stderr to the log too (a worker process of its own); ``raise_errors``: raise a failure or an
    interruption after logging it and calling ``on_end`` with its outcome (the sequential launcher stops as
    ``ablate`` always did)."""
    from .engine import train  # torch and the models: imported in the process that trains
    from .progress import RichReporter
    from .trackers import make_reporter

    layout = ResultsDir(job.results_dir)
    path = layout.log(job.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(path, "a", buffering=1, encoding="utf-8") as f:
        if capture:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        console = Console(file=f, width=160, force_terminal=False, color_system=None)

        def note(message: str) -> None:  # the log file only
            console.print(f"{_now()} {message}", markup=False, highlight=False, soft_wrap=True)

        def log(message: str) -> None:  # the log file, and ``echo``: what the run itself says
            note(message)
            if echo:
                echo(message)

        recipe = job.recipe
        if job.threads and recipe.train.threads is None:
            recipe = recipe.model_copy(deep=True)
            recipe.train.threads = job.threads  # not part of the run id: where it runs, not what
        gpu = f", CUDA_VISIBLE_DEVICES={job.device}" if job.device is not None else ""
        note(f"{job.command} on {socket.gethostname()}, pid {os.getpid()}, {recipe.train.threads or 'default'} "
             f"threads{gpu}")

        def ended(status: str, **values: Any) -> Outcome:
            outcome = Outcome(job.run_id, status, time.perf_counter() - start, log=str(path), **values)
            on_end(outcome)
            return outcome

        try:
            done = read_row(layout.root, job.run_id)
            if done is not None and done["status"] == "completed":
                log(f"{job.run_id} is already completed")
                return ended("skipped", test_acc=done["test_acc"], test_auc=done["test_auc"])
            if resume is None:
                resume = layout.last(job.run_id).exists()
            progress = reporter or RichReporter(console)
            row = train(recipe, job.data_dir, layout.root, resume=resume, log=log,
                        reporter=make_reporter(recipe, layout.root, list(job.tracks), progress, log=log))
        except RunLocked as e:  # another process took the run since it was planned: not this launch's to train
            note(f"skipped: {e}")
            return ended("busy", error=str(e))
        except KeyboardInterrupt as e:
            by = e.signal_name if isinstance(e, Interrupted) else "Ctrl-C"
            note(f"interrupted by {by}; the last finished epoch is saved")
            outcome, error = ended("interrupted", error=f"interrupted by {by}",
                                   exit_code=143 if isinstance(e, Interrupted) else 130), e
        except Exception as e:
            console.print(traceback.format_exc(), markup=False, highlight=False)
            line, code = _error_line(e)
            note(f"failed: {line}")
            outcome, error = ended("failed", error=line, exit_code=code), e
        else:
            note(f"completed: test ACC {row['test_acc']:.4f} AUC {row['test_auc']:.4f}")
            return ended("trained", test_acc=row["test_acc"], test_auc=row["test_auc"])
        if raise_errors:
            raise error
        return outcome


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


def jobs_for(runs: list[PlannedRun], data_dir: Path, results_dir: Path, threads: int | None = None,
             tracks: tuple[str, ...] = ()) -> list[Job]:
    return [Job.of(run, data_dir, results_dir, threads, tracks) for run in runs]


# ------------------------------------------------------------------------------------------------ local pool


def _pool_worker(job: Job, conn, environ: dict[str, str]) -> None:
    """A worker process: one run, its outcome sent back through ``conn``. ``environ``: the launcher's
    environment now (a forkserver's children would otherwise inherit the server's, from when it started)."""
    os.environ.clear()
    os.environ.update(environ)
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # the terminal's Ctrl-C reaches the launcher alone, which passes it on once
    if job.device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = job.device  # before torch initialises CUDA in this process
    conn.send(run_job(job, capture=True))
    conn.close()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM to the launcher raises ``Interrupted``, as Ctrl-C raises KeyboardInterrupt, so both stop the
    workers the same way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def process_context(method: str = "auto"):
    """How worker processes start. auto: forkserver on Linux, with the training modules (torch, timm, the
    models) imported once in the server, so each run still gets a fresh process of its own but starts in a
    fraction of a second instead of paying 3-10 s of imports; spawn elsewhere (macOS frameworks do not survive
    a fork). No process that forks has touched CUDA: the server only imports."""
    if method == "auto":
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["medboost_cli.engine"])
    return ctx


def run_pool(jobs: list[Job], workers: int, on_start: Callable[[Job], None], on_end: Callable[[Outcome], None],
             devices: list[str] | None = None, start_method: str = "auto") -> list[Outcome]:
    """Train ``jobs`` with at most ``workers`` at a time, each in a process of its own (``process_context``)
    with its own GPU (round-robin over ``devices``, default the visible ones). Ctrl-C or SIGTERM passes the
    signal on to the running workers, waits for them to save their epoch and row, and raises again."""
    ctx = process_context(start_method)
    devices = visible_devices() if devices is None else devices
    free = _round_robin(devices, workers)
    queue, running, outcomes = deque(jobs), {}, []

    def finish(conn) -> None:
        process, job, slot, start = running.pop(conn)
        try:
            outcome = conn.recv()
        except (EOFError, OSError):  # the worker died without a word: killed, out of memory
            outcome = None
        conn.close()
        process.join()
        wall = time.perf_counter() - start
        if outcome is None:
            log = ResultsDir(job.results_dir).log(job.run_id)
            outcome = Outcome(job.run_id, "failed", wall, exit_code=1, log=str(log),
                              error=f"its worker process died (exit code {process.exitcode})")
        else:
            outcome = replace(outcome, overhead_s=max(0.0, wall - outcome.seconds))
        free.append(slot)
        outcomes.append(outcome)
        on_end(outcome)

    try:
        with _sigterm_interrupts():
            while queue or running:
                while queue and free:
                    job = replace(queue.popleft(), device=free.pop(0))
                    receive, send = ctx.Pipe(duplex=False)
                    process = ctx.Process(target=_pool_worker, args=(job, send, dict(os.environ)),
                                          name=f"medboost {job.run_id}")
                    start = time.perf_counter()  # the first start also waits for the forkserver's imports
                    process.start()
                    send.close()  # the worker holds the other end: when it exits, ``receive`` reads EOF
                    running[receive] = (process, job, job.device, start)
                    on_start(job)
                for conn in wait_ready(list(running)):
                    finish(conn)
    except KeyboardInterrupt as e:
        signum = signal.SIGTERM if isinstance(e, Interrupted) else signal.SIGINT
        for process, *_ in running.values():
            if process.is_alive():
                os.kill(process.pid, signum)
        for conn in list(running):
            finish(conn)
        raise
    return outcomes


# ------------------------------------------------------------------------------------------------ submitit


@contextmanager
def _preemption_interrupts() -> Iterator[SimpleNamespace]:
    """Under submitit, its preemption/timeout signal (SIGUSR2) raises ``Interrupted`` in the run, which then
    saves its epoch and an "interrupted" row like any interrupted run; submitit's own handler (checkpoint and
    requeue) is kept in ``state.handler`` for the caller to run once the run has stopped."""
    state = SimpleNamespace(handler=None, signum=None)
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    signum = getattr(signal, name, None)
    previous = signal.getsignal(signum) if signum and threading.current_thread() is threading.main_thread() else None
    if not callable(previous):  # not in a submitit job: nothing to hand over to
        yield state
        return

    def handler(sig, frame):
        state.handler, state.signum = previous, sig
        raise Interrupted(f"{name} (preempted or out of time)")

    signal.signal(signum, handler)
    try:
        yield state
    finally:
        signal.signal(signum, previous)


class SubmititRun:
    """What a submitit job calls: one run (``run_job``). Preempted or out of time, it stops at once (saving the
    last finished epoch, as Ctrl-C does), then submitit's handler calls ``checkpoint`` and requeues the job,
    which resumes from last.pt."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self, resume: bool | None = None) -> Outcome:
        if self.job.device is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.job.device
        with _preemption_interrupts() as preempted:
            outcome = run_job(self.job, resume)
        if preempted.handler is not None:
            preempted.handler(preempted.signum, None)  # submitit: self.checkpoint(), requeue, exit
        return outcome

    def checkpoint(self, resume: bool | None = None):
        """The submission a requeued job runs: the same run, resumed from its last epoch checkpoint."""
        return _submitit().helpers.DelayedSubmission(SubmititRun(self.job), resume=True)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("the slurm and submitit-local launchers need submitit: pip install 'medboost[cluster]'") from None
    return submitit


def _parse_minutes(value: Any) -> Any:
    """Slurm's time formats as minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (and plain integers)."""
    if not isinstance(value, str):
        return value
    found = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not found:
        raise ValueError(f"'{value}' is not a Slurm time (minutes, H:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else None for g in found.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = a, b or 0, c or 0
    elif c is not None:  # H:M:S
        hours, minutes, seconds = a, b, c
    else:  # M or M:S
        hours, minutes, seconds = 0, a, b or 0
    return (days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


class ClusterOptions(BaseModel):
    """How each run's job is sized and where it goes; a profile file holds these keys (``-`` or ``_``)."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = None
    gpus_per_run: int | None = Field(None, ge=0, description="GPUs per job (Slurm --gpus-per-node)")
    cpus_per_run: int | None = Field(None, ge=1, description="CPU cores per job; also the run's torch threads")
    mem: str | None = Field(None, pattern=r"^\d+[KMGTkmgt]?[Bb]?$", description="memory per job: 32G, 64000M")
    time: int = Field(24 * 60, ge=1, description="time limit per job in minutes (or H:MM:SS, D-HH:MM:SS); a run "
                      "that needs longer is requeued and resumes")
    account: str | None = None
    qos: str | None = None
    signal_delay_s: int = Field(120, ge=10, description="seconds before the time limit the job is told to stop")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job (module load, "
                             "source a virtual environment)")
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict, description="any other sbatch option: "
                                                "{constraint: a100, mail-type: END}")

    @field_validator("time", mode="before")
    @classmethod
    def _minutes(cls, value: Any) -> Any:
        return _parse_minutes(value)


def _first_error(e: ValidationError) -> tuple[str, str]:
    first = e.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    return key, f"{first.get('input')!r} ({first['msg']})"


def cluster_options(profile: Path | None, flags: dict[str, Any]) -> ClusterOptions:
    """The profile's options (if any) with the command line's ``flags`` (None: not given) on top."""
    data: dict[str, Any] = {}
    if profile is not None:
        if not Path(profile).is_file():
            raise ConfigError(f"profile {profile} not found; write a YAML file with keys {', '.join(ClusterOptions.model_fields)}")
        data = {str(k).replace("-", "_"): v for k, v in read_yaml(Path(profile)).items()}
        try:
            ClusterOptions.model_validate(data)
        except ValidationError as e:
            key, what = _first_error(e)
            raise ConfigError(f"{profile}: bad profile key '{key}': {what}; keys: "
                              f"{', '.join(ClusterOptions.model_fields)}") from None
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return ClusterOptions.model_validate(data | given)
    except ValidationError as e:
        key, what = _first_error(e)
        raise ConfigError(f"--{key.replace('_', '-')} {what}") from None


def sbatch_parameters(options: ClusterOptions, parallel: int | None) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for ``options`` (at most ``parallel`` array jobs at once)."""
    params = dict(job_name="medboost", time=options.time, signal_delay_s=options.signal_delay_s,
                  partition=options.partition, gpus_per_node=options.gpus_per_run, cpus_per_task=options.cpus_per_run,
                  mem=options.mem, account=options.account, qos=options.qos, setup=options.setup or None,
                  additional_parameters=options.sbatch or None, array_parallelism=parallel)
    return {k: v for k, v in params.items() if v is not None}


def sbatch_script(options: ClusterOptions, parallel: int | None, runs: int, folder: Path) -> str:
    """The sbatch script submitit would submit for an array of ``runs`` jobs (for --dry-run)."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor itself submits

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=runs, **sbatch_parameters(options, parallel))


def submitit_folder(results_dir: Path) -> Path:
    return Path(results_dir).absolute() / "submitit" / "%j"


def make_executor(launcher: str, results_dir: Path, options: ClusterOptions, parallel: int | None):
    submitit = _submitit()
    folder = submitit_folder(results_dir)
    if launcher == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.time, signal_delay_s=options.signal_delay_s)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError:
        raise ConfigError("--launcher slurm: no Slurm here (srun is not on PATH); run on a login node, or look "
                          "with --dry-run, or try the set-up locally with --launcher submitit-local") from None
    executor.update_parameters(**sbatch_parameters(options, parallel))
    return executor


def submit(jobs: list[Job], executor) -> list[tuple[Any, Job]]:
    """One submitit job per run, as one array (Slurm) where the executor makes arrays."""
    with executor.batch():
        submitted = [executor.submit(SubmititRun(job)) for job in jobs]
    return list(zip(submitted, jobs))


def _collect(submitted, job: Job) -> Outcome:
    try:
        return submitted.result()
    except Exception as e:  # submitit's FailedJobError / UncompletedJobError: the job died or gave up
        lines = [line for line in str(e).splitlines() if line.strip()]
        return Outcome(job.run_id, "failed", error=f"job {submitted.job_id}: {lines[-1] if lines else type(e).__name__}",
                       exit_code=1, log=str(ResultsDir(job.results_dir).log(job.run_id)))


def wait_for(submitted: list[tuple[Any, Job]], on_end: Callable[[Outcome], None], poll_s: float = 1.0) -> list[Outcome]:
    """Wait for submitted jobs, reporting each outcome as its job ends (in the order they end)."""
    pending, outcomes = list(submitted), []
    while pending:
        for item in [p for p in pending if p[0].done()]:
            pending.remove(item)
            outcomes.append(_collect(*item))
            on_end(outcomes[-1])
        if pending:
            time.sleep(poll_s)
    return outcomes


# ------------------------------------------------------------------------------------------------ reporting


def start_line(job: Job, index: int, total: int) -> str:
    where = f" on GPU {job.device}" if job.device is not None else ""
    return f"[{index}/{total}] start {job.run_id}{where}"


def end_line(o: Outcome) -> str:
    if o.status in ("trained", "skipped") and o.test_auc is not None:
        what = f"test AUC {o.test_auc:.4f}"
    else:
        what = f"{o.error} (log: {o.log})" if o.error else ""
    return f"{o.status:<11} {o.run_id}: {what} ({o.seconds:.0f} s)"


def summary_line(outcomes: list[Outcome], completed_before: int, busy_before: int, not_started: int = 0) -> str:
    """The counts of a launch: trained, skipped, failed, interrupted (and busy, not started)."""
    counts = Counter(o.status for o in outcomes)
    parts = [f"{counts['trained']} trained", f"{completed_before + counts['skipped']} skipped (completed)",
             f"{counts['failed']} failed", f"{counts['interrupted']} interrupted"]
    if busy_before + counts["busy"]:
        parts.append(f"{busy_before + counts['busy']} being trained elsewhere")
    if not_started:
        parts.append(f"{not_started} not started")
    return ", ".join(parts)


def summary_table(outcomes: list[Outcome]) -> Table:
    """The runs a launch handled: how each ended, its seconds (in its process), test AUC or error."""
    table = Table()
    pooled = any(o.overhead_s is not None for o in outcomes)
    columns = ["run", "status", "seconds"] + (["start-up s"] if pooled else []) + ["test AUC", "error"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("run", "status", "error") else "right")
    for o in outcomes:
        auc = f"{o.test_auc:.4f}" if o.test_auc is not None else ""
        overhead = [f"{o.overhead_s:.1f}" if o.overhead_s is not None else ""] if pooled else []
        table.add_row(o.run_id, o.status, f"{o.seconds:.1f}", *overhead, auc, o.error or "")
    return table


class RunsFailed(MedboostError):
    """Some runs of a launch failed: the launch exits with the first failure's code and kind."""

    def __init__(self, failed: list[Outcome], total: int):
        first = failed[0]
        super().__init__(f"{len(failed)} of {total} runs failed; the first, {first.run_id}: {first.error} "
                         f"(log: {first.log})")
        self.exit_code = first.exit_code or 1
        kind = (first.error or "").split(":", 1)[0]
        self.kind = kind if kind.endswith(" error") else "error"


# ------------------------------------------------------------------------------------------------ a study


def launch(launcher: str, plan: list[PlannedRun], data_dir: Path, results_dir: Path, *, jobs: int | None = None,
           options: ClusterOptions | None = None, dry_run: bool = False, wait: bool = False, reporter: Any = None,
           say: Callable[[str], None] = print, log: Callable[[str], None] = print,
           show: Callable[[Any], None] = print, title: str = "", tracks: tuple[str, ...] = ()) -> list[Outcome]:
    """Train what ``plan`` still lacks in ``results_dir`` with ``launcher``; one line per run as it starts
    (or is submitted) and ends, and a summary table at the end (also when interrupted). Raises ``RunsFailed``
    when a run failed (the sequential launcher stops at the first failure, raising its error)."""
    from .studies import pending, run_study

    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher}: choose {', '.join(LAUNCHERS)}")
    options = options or ClusterOptions()
    state = pending(plan, results_dir)
    if dry_run:
        if launcher != "local":
            say(f"# {len(state.todo)} of {len(plan)} runs to submit as a {launcher} job array; its sbatch script:"
                if launcher == "slurm" else f"# {len(state.todo)} of {len(plan)} runs to run as submitit-local jobs, "
                f"{options.time} min each at most")
            if launcher == "slurm":
                say(sbatch_script(options, jobs, max(1, len(state.todo)), submitit_folder(results_dir)))
        done = {run.run_id for run in state.done}
        for run in plan:
            mark = "done" if run.run_id in done else "busy" if run.run_id in state.busy else "todo"
            say(f"{mark}  {run.command()}")
        return []
    outcomes: list[Outcome] = []
    started: list[Job] = []

    def ended(outcome: Outcome) -> None:
        outcomes.append(outcome)
        say(end_line(outcome))

    todo = jobs_for(state.todo, data_dir, results_dir, tracks=tracks)
    try:
        if launcher == "local" and (jobs or 1) == 1:
            by_id = {job.run_id: job for job in todo}

            def train_one(recipe, data, results, resume):
                job = by_id[recipe.run_id()]
                started.append(job)
                run_job(job, resume, reporter=reporter, echo=log, raise_errors=True, on_end=ended)

            run_study(plan, data_dir, results_dir, train_one, log=say)
        elif launcher == "local":
            parallel = min(jobs, len(todo))
            say(f"{len(plan)} runs planned, {len(state.done)} already completed, {len(state.busy)} being trained "
                f"elsewhere, {len(todo)} to train with {parallel} workers of {cpu_threads(parallel)} threads")
            todo = [replace(job, threads=cpu_threads(parallel)) for job in todo]

            def on_start(job: Job) -> None:
                started.append(job)
                say(start_line(job, len(started), len(todo)))

            run_pool(todo, max(1, parallel), on_start, ended)
        else:
            executor = make_executor(launcher, results_dir, options, jobs)
            if launcher == "submitit-local":  # all at once on this machine: share its cores
                todo = [replace(job, threads=cpu_threads(len(todo)), device=d) for job, d in
                        zip(todo, _round_robin(visible_devices(), len(todo)))]
            elif options.cpus_per_run:
                todo = [replace(job, threads=options.cpus_per_run) for job in todo]
            submitted = submit(todo, executor) if todo else []
            started.extend(todo)
            for i, (job_handle, job) in enumerate(submitted, 1):
                say(f"[{i}/{len(submitted)}] submitted {job.run_id} as job {job_handle.job_id}")
            if launcher == "slurm" and not wait:
                say(f"{len(submitted)} jobs submitted ({len(state.done)} runs already completed, {len(state.busy)} "
                    f"being trained); follow them with squeue and `medboost runs`, logs in {results_dir}/logs")
                return outcomes
            wait_for(submitted, ended, poll_s=1.0 if launcher == "submitit-local" else 30.0)
    finally:
        if launcher != "slurm" or wait:
            if outcomes:
                show(summary_table(outcomes))
            counts = summary_line(outcomes, len(state.done), len(state.busy), len(todo) - len(started))
            say(f"{title}: {counts}" if title else counts)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise RunsFailed(failed, len(outcomes))
    return outcomes


def _round_robin(devices: list[str], n: int) -> list[str | None]:
    return [devices[i % len(devices)] if devices else None for i in range(n)]
