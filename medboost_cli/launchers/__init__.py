"""Launchers: how the runs of a study are trained, as a registry of ``Launcher`` entries, one module each.

- ``local`` (``local.py``): this machine. ``--jobs 1`` trains one run after the other in this process
  (``in_process.py``); ``--jobs N`` a pool of N worker processes, one GPU each (``local_pool.py``, ``pool.py``).
- ``slurm`` (``slurm.py``): a submitit job array, one job per run, requeued and resumed when preempted.
- ``submitit-local`` (``submitit_local.py``): the same submitit path with local processes.

Every launcher trains a run with the same function, ``jobs.run_job``; ``launch`` around it plans, lists a dry run,
and reports the outcomes (``summary.py``). Each entry declares whether it takes ``--profile``, ``--wait`` and the
cluster options (``cluster.py``). Adding a launcher is one module with a ``Launcher`` subclass and one entry in
``LAUNCHERS`` below.

This module and the entries import nothing heavy at their top: the command line reads the registry for its help.
The names of the modules beside it (``Job``, ``run_pool``, ``ClusterOptions``, ...) are importable from here too,
loaded when first asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError
from .base import Launch, Launcher
from .local import Local
from .slurm import Slurm
from .submitit_local import SubmititLocal

if TYPE_CHECKING:
    from ..studies import PlannedRun
    from .cluster import ClusterOptions
    from .jobs import Outcome

LAUNCHERS: dict[str, Launcher] = {entry.name: entry for entry in (Local(), Slurm(), SubmititLocal())}


def launcher_named(name: str) -> Launcher:
    """The registered launcher ``name``, or one line listing the registered ones."""
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher {name}: choose {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name]


def check_options(launcher: Launcher, cluster_options_given: bool) -> None:
    """One line when ``--profile``, ``--wait`` or a cluster option is given to a launcher that takes none."""
    if cluster_options_given and not launcher.takes_cluster_options:
        takers = " or ".join(name for name, entry in LAUNCHERS.items() if entry.takes_cluster_options)
        raise ConfigError(f"--profile, --wait and the cluster options apply to --launcher {takers}")


def help_text() -> str:
    """``--launcher``'s help: each registered launcher and what it is."""
    return "; ".join(f"{name}: {entry.summary}" for name, entry in LAUNCHERS.items())


def launch(launcher: str, plan: list[PlannedRun], data_dir: Path, results_dir: Path, *, jobs: int | None = None,
           options: ClusterOptions | None = None, dry_run: bool = False, wait: bool = False, reporter: Any = None,
           say: Callable[[str], None] = print, log: Callable[[str], None] = print,
           show: Callable[[Any], None] = print, title: str = "", tracks: tuple[str, ...] = ()) -> list[Outcome]:
    """Train what ``plan`` still lacks in ``results_dir`` with ``launcher``; one line per run as it starts
    (or is submitted) and ends, and a summary table at the end (also when interrupted). Raises ``RunsFailed``
    when a run failed (the sequential launcher stops at the first failure, raising its error)."""
    from ..studies import pending
    from .cluster import ClusterOptions
    from .jobs import jobs_for
    from .summary import RunsFailed, summary_line, summary_table

    entry = launcher_named(launcher)
    state = pending(plan, results_dir)
    this = Launch(plan, state, jobs_for(state.todo, data_dir, results_dir, tracks=tracks), data_dir, results_dir,
                  jobs, options or ClusterOptions(), wait, reporter, say, log)
    if dry_run:
        _dry_run(entry, this)
        return []
    try:
        entry.run(this)
    finally:
        if entry.waits(this):
            if this.outcomes:
                show(summary_table(this.outcomes))
            counts = summary_line(this.outcomes, len(state.done), len(state.busy), len(this.todo) - len(this.started))
            say(f"{title}: {counts}" if title else counts)
    failed = [o for o in this.outcomes if o.status == "failed"]
    if failed:
        raise RunsFailed(failed, len(this.outcomes))
    return this.outcomes


def _dry_run(entry: Launcher, launch: Launch) -> None:
    """What the launcher would do (``preview``), then each run of the plan: done, busy or todo."""
    for line in entry.preview(launch):
        launch.say(line)
    done = {run.run_id for run in launch.state.done}
    for run in launch.plan:
        mark = "done" if run.run_id in done else "busy" if run.run_id in launch.state.busy else "todo"
        launch.say(f"{mark}  {run.command()}")


# name -> the module beside this one that defines it
_ELSEWHERE = {
    "jobs": ("Job", "Outcome", "run_job", "cpu_threads", "visible_devices", "jobs_for", "round_robin"),
    "cluster": ("ClusterOptions", "cluster_options", "sbatch_parameters", "sbatch_script", "submitit_folder"),
    "pool": ("run_pool", "process_context"),
    "submitit_jobs": ("SubmititRun", "submit", "wait_for"),
    "summary": ("start_line", "end_line", "summary_line", "summary_table", "RunsFailed"),
}
_MODULE_OF = {name: module for module, names in _ELSEWHERE.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
