"""A pool of local worker processes: at most N at once, a fresh one per run (so each starts clean and a crash takes
only its own run), forked from a server that imported torch and the models once (``process_context``), each with
its own GPU, round-robin over the visible ones."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.connection import wait as wait_ready
from typing import Callable, Iterator

from ..errors import Interrupted
from ..results import ResultsDir
from .jobs import Job, Outcome, round_robin, run_job, visible_devices


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


class _Pool:
    """The running workers of ``run_pool``: each one's pipe, process, job, GPU slot and start time."""

    def __init__(self, ctx, slots: list[str | None], on_start: Callable[[Job], None],
                 on_end: Callable[[Outcome], None]):
        self.ctx, self.free, self.on_start, self.on_end = ctx, slots, on_start, on_end
        self.running: dict = {}
        self.outcomes: list[Outcome] = []

    def start(self, job: Job) -> None:
        job = replace(job, device=self.free.pop(0))
        receive, send = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(target=_pool_worker, args=(job, send, dict(os.environ)), name=f"medboost {job.run_id}")
        start = time.perf_counter()  # the first start also waits for the forkserver's imports
        process.start()
        send.close()  # the worker holds the other end: when it exits, ``receive`` reads EOF
        self.running[receive] = (process, job, job.device, start)
        self.on_start(job)

    def finish(self, conn) -> None:
        process, job, slot, start = self.running.pop(conn)
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
        self.free.append(slot)
        self.outcomes.append(outcome)
        self.on_end(outcome)

    def stop(self, e: KeyboardInterrupt) -> None:
        """Pass Ctrl-C (SIGINT) or SIGTERM on to the running workers and wait for each to save and report."""
        signum = signal.SIGTERM if isinstance(e, Interrupted) else signal.SIGINT
        for process, *_ in self.running.values():
            if process.is_alive():
                os.kill(process.pid, signum)
        for conn in list(self.running):
            self.finish(conn)


def run_pool(jobs: list[Job], workers: int, on_start: Callable[[Job], None], on_end: Callable[[Outcome], None],
             devices: list[str] | None = None, start_method: str = "auto") -> list[Outcome]:
    """Train ``jobs`` with at most ``workers`` at a time, each in a process of its own (``process_context``)
    with its own GPU (round-robin over ``devices``, default the visible ones). Ctrl-C or SIGTERM passes the
    signal on to the running workers, waits for them to save their epoch and row, and raises again."""
    ctx = process_context(start_method)
    devices = visible_devices() if devices is None else devices
    pool = _Pool(ctx, round_robin(devices, workers), on_start, on_end)
    queue = deque(jobs)
    try:
        with _sigterm_interrupts():
            while queue or pool.running:
                while queue and pool.free:
                    pool.start(queue.popleft())
                for conn in wait_ready(list(pool.running)):
                    pool.finish(conn)
    except KeyboardInterrupt as e:
        pool.stop(e)
        raise
    return pool.outcomes
