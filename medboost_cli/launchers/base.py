"""What every launcher is (``Launcher``) and what one launch hands it (``Launch``).

This module imports nothing heavy (no torch, pandas or pydantic): the command line reads the registry to build
``--launcher``'s help and checks, and ``medboost --help`` must stay instant. A launcher module keeps to the same
rule at its top and imports its machinery (``jobs``, ``pool``, ``submitit_jobs``) inside its methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Protocol

if TYPE_CHECKING:
    from ..studies import Pending, PlannedRun
    from .cluster import ClusterOptions
    from .jobs import Job, Outcome


@dataclass
class Launch:
    """One launch of a study: the plan and what is still to train, where, with which options, and where to say
    how it goes. A launcher appends to ``started`` the jobs it starts (or submits) and reports each run's end
    through ``ended``."""

    plan: list[PlannedRun]
    state: Pending  # the plan against the results folder: todo, done, busy
    todo: list[Job]  # one job per run still to train
    data_dir: Path
    results_dir: Path
    jobs: int | None  # --jobs: runs at once (None: the launcher's default)
    options: ClusterOptions
    wait: bool  # --wait
    reporter: Any = None  # the progress display of a run trained in this process
    say: Callable[[str], None] = print  # stdout: what the launch does
    log: Callable[[str], None] = print  # stderr: what a run in this process says
    started: list[Job] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def ended(self, outcome: Outcome) -> None:
        """Record how a run ended and say it in one line."""
        from .summary import end_line

        self.outcomes.append(outcome)
        self.say(end_line(outcome))


class Launcher(Protocol):
    """A way to train a launch's runs. An entry declares its name, a one-line summary (``--launcher``'s help),
    whether it takes ``--profile``, ``--wait`` and the cluster options, what ``--dry-run`` prints before the list
    of runs, and whether a launch waits for its runs to end (then the summary table and counts are printed).

    Entries subclass this protocol to inherit the defaults below."""

    name: ClassVar[str]
    summary: ClassVar[str]
    takes_cluster_options: ClassVar[bool] = False

    def preview(self, launch: Launch) -> Iterable[str]:
        """Lines ``--dry-run`` prints before the runs (for a cluster: what would be submitted)."""
        return ()

    def waits(self, launch: Launch) -> bool:
        """Whether this launch follows its runs to their end (and so can report how each ended)."""
        return True

    def run(self, launch: Launch) -> None:
        """Train (or submit) ``launch.todo``, appending to ``launch.started`` and calling ``launch.ended``."""
        ...
