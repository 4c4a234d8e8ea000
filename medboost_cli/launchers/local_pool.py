"""``local --jobs N``: at most N worker processes at once (``pool.run_pool``), each run with ``C // N`` torch
threads on C cores unless the recipe sets ``train.threads``."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from .base import Launch, Launcher


class LocalPool(Launcher):
    name: ClassVar[str] = "local"
    summary: ClassVar[str] = "this machine, a pool of worker processes, one GPU each"

    def run(self, launch: Launch) -> None:
        from .jobs import Job, cpu_threads
        from .pool import run_pool
        from .summary import start_line

        state = launch.state
        parallel = min(launch.jobs or 1, len(launch.todo))
        launch.say(f"{len(launch.plan)} runs planned, {len(state.done)} already completed, {len(state.busy)} being "
                   f"trained elsewhere, {len(launch.todo)} to train with {parallel} workers of "
                   f"{cpu_threads(parallel)} threads")
        todo = [replace(job, threads=cpu_threads(parallel)) for job in launch.todo]

        def on_start(job: Job) -> None:
            launch.started.append(job)
            launch.say(start_line(job, len(launch.started), len(todo)))

        run_pool(todo, max(1, parallel), on_start, launch.ended)
