"""Runs as submitit jobs, shared by the slurm and submitit-local launchers: ``SubmititRun`` (what a job calls),
submitting a launch's runs as one batch, and following the jobs to their end.

A job preempted or out of time (Slurm's SIGUSR2, ``signal_delay_s`` before the end) saves its epoch, marks its row
interrupted and is requeued by submitit's checkpointing, resuming from its last.pt.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from ..errors import Interrupted
from ..results import ResultsDir
from .base import Launch
from .cluster import submitit_module
from .jobs import Job, Outcome, run_job


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
        return submitit_module().helpers.DelayedSubmission(SubmititRun(self.job), resume=True)


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


def submit_and_follow(launch: Launch, executor, todo: list[Job], follow: bool, poll_s: float) -> None:
    """Submit ``todo`` through ``executor``, a line per job; then, if ``follow``, wait for each to end, else say
    how to follow them."""
    submitted = submit(todo, executor) if todo else []
    launch.started.extend(todo)
    for i, (handle, job) in enumerate(submitted, 1):
        launch.say(f"[{i}/{len(submitted)}] submitted {job.run_id} as job {handle.job_id}")
    if not follow:
        launch.say(f"{len(submitted)} jobs submitted ({len(launch.state.done)} runs already completed, "
                   f"{len(launch.state.busy)} being trained); follow them with squeue and `medboost runs`, logs in "
                   f"{launch.results_dir}/logs")
        return
    wait_for(submitted, launch.ended, poll_s=poll_s)
