"""``local --jobs 1``: the runs one after the other in this process, each run's log lines on the terminal; the
first failure stops the launch with that run's error."""

from __future__ import annotations

from typing import ClassVar

from .base import Launch, Launcher


class InProcess(Launcher):
    name: ClassVar[str] = "local"
    summary: ClassVar[str] = "this machine, one run after the other in this process"

    def run(self, launch: Launch) -> None:
        from ..studies import run_study
        from .jobs import run_job

        by_id = {job.run_id: job for job in launch.todo}

        def train_one(recipe, data, results, resume):
            job = by_id[recipe.run_id()]
            launch.started.append(job)
            run_job(job, resume, reporter=launch.reporter, echo=launch.log, raise_errors=True, on_end=launch.ended)

        run_study(launch.plan, launch.data_dir, launch.results_dir, train_one, log=launch.say)
