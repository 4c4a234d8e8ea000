"""``--launcher slurm``: a submitit job array of the runs still to train, one job per run, sized by the cluster
options (``cluster.ClusterOptions``). Without ``--wait`` the launch ends once the array is submitted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Iterable

from ..errors import ConfigError
from .base import Launch, Launcher


class Slurm(Launcher):
    name: ClassVar[str] = "slurm"
    summary: ClassVar[str] = "a job array through submitit"
    takes_cluster_options: ClassVar[bool] = True

    def preview(self, launch: Launch) -> Iterable[str]:
        from .cluster import sbatch_script, submitit_folder

        runs = len(launch.todo)
        yield f"# {runs} of {len(launch.plan)} runs to submit as a slurm job array; its sbatch script:"
        yield sbatch_script(launch.options, launch.jobs, max(1, runs), submitit_folder(launch.results_dir))

    def waits(self, launch: Launch) -> bool:
        return launch.wait

    @staticmethod
    def executor(results_dir: Path, options, parallel: int | None):
        """submitit's SlurmExecutor with ``options`` (at most ``parallel`` array jobs at once)."""
        from .cluster import sbatch_parameters, submitit_folder, submitit_module

        submitit = submitit_module()
        try:
            executor = submitit.SlurmExecutor(folder=submitit_folder(results_dir))
        except RuntimeError:
            raise ConfigError("--launcher slurm: no Slurm here (srun is not on PATH); run on a login node, or look "
                              "with --dry-run, or try the set-up locally with --launcher submitit-local") from None
        executor.update_parameters(**sbatch_parameters(options, parallel))
        return executor

    def run(self, launch: Launch) -> None:
        from .submitit_jobs import submit_and_follow

        executor = self.executor(launch.results_dir, launch.options, launch.jobs)
        todo = launch.todo
        if launch.options.cpus_per_run:
            todo = [replace(job, threads=launch.options.cpus_per_run) for job in todo]
        submit_and_follow(launch, executor, todo, follow=launch.wait, poll_s=30.0)
