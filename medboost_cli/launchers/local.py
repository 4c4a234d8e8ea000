"""``--launcher local``: this machine. ``--jobs 1`` (the default) trains in this process (``InProcess``),
``--jobs N`` in a pool of N worker processes (``LocalPool``)."""

from __future__ import annotations

from typing import ClassVar, Iterable

from .base import Launch, Launcher
from .in_process import InProcess
from .local_pool import LocalPool


class Local(Launcher):
    name: ClassVar[str] = "local"
    summary: ClassVar[str] = "this machine"

    @staticmethod
    def chosen(launch: Launch) -> Launcher:
        """The launcher for ``launch``'s ``--jobs``."""
        return InProcess() if (launch.jobs or 1) == 1 else LocalPool()

    def preview(self, launch: Launch) -> Iterable[str]:
        return self.chosen(launch).preview(launch)

    def waits(self, launch: Launch) -> bool:
        return self.chosen(launch).waits(launch)

    def run(self, launch: Launch) -> None:
        self.chosen(launch).run(launch)
