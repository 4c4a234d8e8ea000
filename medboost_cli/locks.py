"""Run locks: at most one process trains a given run at a time, whatever started it (``medboost train``,
``ablate`` with any launcher, a cluster job) and whichever host it runs on, as long as they share the results
folder.

A run in progress holds ``locks/RUN_ID.lock`` in the results folder: a file created atomically (``O_CREAT |
O_EXCL``, which NFS v3+ and Lustre honour) holding JSON with the host, the pid and its start time, the lock's
start time and the scheduler job (Slurm's job id and restart count) if any. ``engine.train`` takes it before
anything else (``locked_run``) and removes it in a ``finally``. A lock is *stale*, and is taken over, when

- its host is this host and its process is gone (or the pid now belongs to another process);
- it was taken by an earlier start of this very Slurm job (the same ``SLURM_JOB_ID``, a lower
  ``SLURM_RESTART_COUNT``): a requeued job whose first start was killed before it could remove its lock;
- ``$MEDBOOST_LOCK_MAX_AGE_HOURS`` is set and neither the lock nor the run's checkpoint or row has changed for
  that long (a host that died for good; the run writes its last.pt every epoch).

Any other lock, in particular one from another host, is respected: the second trainer stops with one line
naming the holder. A process whose host is gone for good leaves a lock that only the age limit, or deleting the
file by hand, clears.

Under ``torchrun`` (``$RANK`` set) only rank 0 takes the lock: the ranks of one run are one trainer.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from .errors import ResultsError
from .results import ResultsDir

MAX_AGE_ENV = "MEDBOOST_LOCK_MAX_AGE_HOURS"
_BREAK_GRACE_S = 30.0  # a takeover guard older than this was left by a process that died while breaking a lock
_EMPTY_GRACE_S = 10.0  # a lock file still empty after this long was never finished by its creator


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock: written into the lock file by ``acquire``."""

    host: str
    pid: int
    since: str  # when the lock was taken (UTC, ISO 8601)
    pid_started: float | None = None  # the process's start time (psutil), so a reused pid is not taken for it
    job: str | None = None  # $SLURM_JOB_ID
    restart: int = 0  # $SLURM_RESTART_COUNT

    @classmethod
    def me(cls) -> Holder:
        job = os.environ.get("SLURM_JOB_ID")
        return cls(host=socket.gethostname(), pid=os.getpid(), since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   pid_started=_process_start(os.getpid()), job=job,
                   restart=int(os.environ.get("SLURM_RESTART_COUNT") or 0) if job else 0)

    def same_process(self, other: Holder) -> bool:
        return (self.host, self.pid, self.pid_started) == (other.host, other.pid, other.pid_started)


class RunLocked(ResultsError):
    """Another live process trains this run."""

    def __init__(self, run_id: str, holder: Holder, path: Path):
        super().__init__(f"{run_id} is being trained by pid {holder.pid} on {holder.host} since {holder.since} "
                         f"(lock {path}; delete it only if that process is gone)")
        self.holder = holder


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def read_holder(path: Path) -> Holder | None:
    """The lock's holder; None when there is no lock file or it is not (yet) a complete one."""
    try:
        data = json.loads(Path(path).read_text())
        return Holder(**data)
    except (OSError, ValueError, TypeError):
        return None


def stale_reason(holder: Holder, path: Path, activity: list[Path] = ()) -> str | None:
    """Why ``holder``'s lock may be taken over, or None when it must be respected (see the module's rules)."""
    me = Holder.me()
    if holder.host == me.host:
        if not psutil.pid_exists(holder.pid):
            return f"pid {holder.pid} on {holder.host} is gone"
        started = _process_start(holder.pid)
        if holder.pid_started is not None and started is not None and abs(started - holder.pid_started) > 1:
            return f"pid {holder.pid} on {holder.host} is another process now"
    if holder.job is not None and holder.job == me.job and me.restart > holder.restart:
        return f"taken by start {holder.restart} of Slurm job {holder.job}, now requeued"
    max_age = os.environ.get(MAX_AGE_ENV)
    if max_age:
        try:
            hours = float(max_age)
        except ValueError:
            raise ResultsError(f"${MAX_AGE_ENV}={max_age!r} is not a number of hours") from None
        times = [p.stat().st_mtime for p in [path, *activity] if p.exists()]
        idle = (time.time() - max(times)) / 3600 if times else 0.0
        if idle > hours:
            return f"no sign of life from {holder.host} for {idle:.1f} h (${MAX_AGE_ENV}={max_age})"
    return None


def _activity(layout: ResultsDir, run_id: str) -> list[Path]:
    """Files a training run rewrites as it goes: its checkpoint every epoch, its row at start and end."""
    return [layout.last(run_id), layout.row(run_id)]


def live_holder(results_dir: Path, run_id: str) -> Holder | None:
    """The live holder of ``run_id``'s lock, or None when it is free or stale (what a planner asks)."""
    layout = ResultsDir(results_dir)
    path = layout.lock(run_id)
    holder = read_holder(path)
    if holder is None:
        return None
    return None if stale_reason(holder, path, _activity(layout, run_id)) else holder


@contextmanager
def _guard(path: Path) -> Iterator[bool]:
    """An exclusive guard around taking over ``path`` (two processes must not both break one lock and each
    think the new one theirs); yields False when another process holds the guard."""
    guard = path.with_name(path.name + ".break")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > _BREAK_GRACE_S:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        yield False
        return
    os.close(fd)
    try:
        yield True
    finally:
        guard.unlink(missing_ok=True)


def acquire(results_dir: Path, run_id: str, log: Callable[[str], None] = lambda _: None,
            attempts: int = 50) -> Holder:
    """Take ``run_id``'s lock, taking over a stale one; raise ``RunLocked`` when a live process holds it."""
    layout = ResultsDir(results_dir)
    path = layout.lock(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Holder.me()
    for _ in range(attempts):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is None:  # being written this instant, or left empty by a creator killed in between
                try:
                    empty_for = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if empty_for < _EMPTY_GRACE_S:
                    time.sleep(0.1)
                    continue
                reason = "its lock file is empty or unreadable"
            else:
                reason = stale_reason(holder, path, _activity(layout, run_id))
                if reason is None:
                    raise RunLocked(run_id, holder, path) from None
            with _guard(path) as mine:
                if mine and read_holder(path) == holder:  # still the stale one, not a fresh lock taken meanwhile
                    path.unlink(missing_ok=True)
                    log(f"taking over the stale lock of {run_id}: {reason}")
                    continue
            time.sleep(0.1)
            continue
        try:
            os.write(fd, json.dumps(asdict(me)).encode())
            os.fsync(fd)
        except BaseException:  # a full disk: no empty lock file left for others to wait on
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return me
    holder = read_holder(path)
    if holder is not None:
        raise RunLocked(run_id, holder, path)
    raise ResultsError(f"{path}: could not take the lock of {run_id}; delete that file if no process trains it")


def release(results_dir: Path, run_id: str, me: Holder) -> None:
    """Remove the lock if it is still ``me``'s (never one another process has taken over)."""
    path = ResultsDir(results_dir).lock(run_id)
    holder = read_holder(path)
    if holder is not None and holder.same_process(me):
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(results_dir: Path, run_id: str, log: Callable[[str], None] = lambda _: None) -> Iterator[Holder]:
    me = acquire(results_dir, run_id, log)
    try:
        yield me
    finally:
        release(results_dir, run_id, me)


def locked_run(train: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``engine.train(recipe, data_dir, results_dir, ..., log=...)``: it runs holding the run's lock."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def wrapper(*args, **kwargs):
        if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: rank 0 holds the lock for the run
            return train(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        with run_lock(Path(a["results_dir"]), a["recipe"].run_id(), a.get("log") or print):
            return train(*args, **kwargs)

    return wrapper
