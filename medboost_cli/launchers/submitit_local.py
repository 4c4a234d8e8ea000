"""``--launcher submitit-local``: the slurm launcher's code path with submitit's LocalExecutor (local processes,
all at once, sharing this machine's cores and GPUs), to try a cluster set-up on a workstation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Iterable

from .base import Launch, Launcher


class SubmititLocal(Launcher):
    name: ClassVar[str] = "submitit-local"
    summary: ClassVar[str] = "submitit's local executor (to try a cluster set-up)"
    takes_cluster_options: ClassVar[bool] = True

    def preview(self, launch: Launch) -> Iterable[str]:
        yield (f"# {len(launch.todo)} of {len(launch.plan)} runs to run as submitit-local jobs, "
               f"{launch.options.time} min each at most")

    @staticmethod
    def executor(results_dir: Path, options, parallel: int | None = None):
        """submitit's LocalExecutor with ``options``' time limit and signal delay (``parallel``: unused, all the
        jobs run at once)."""
        from .cluster import submitit_folder, submitit_module

        executor = submitit_module().LocalExecutor(folder=submitit_folder(results_dir))
        executor.update_parameters(timeout_min=options.time, signal_delay_s=options.signal_delay_s)
        return executor

    def run(self, launch: Launch) -> None:
        from .jobs import cpu_threads, round_robin, visible_devices
        from .submitit_jobs import submit_and_follow

        executor = self.executor(launch.results_dir, launch.options, launch.jobs)
        n = len(launch.todo)  # all at once on this machine: share its cores and GPUs
        todo = [replace(job, threads=cpu_threads(n), device=d)
                for job, d in zip(launch.todo, round_robin(visible_devices(), n))]
        submit_and_follow(launch, executor, todo, follow=True, poll_s=1.0)
