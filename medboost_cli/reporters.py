"""What a training run tells a progress display (``progress.py``) or an experiment tracker (``trackers.py``), and
the reporter that hears nothing."""

from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    """What a run tells a progress display or an experiment tracker (trackers.py): ``start`` before the first
    epoch it trains (``unit``: "point" where a step budget cuts training into evaluation points, budget.py),
    ``step`` per batch, ``epoch`` per finished epoch, ``close`` once training stops, and
    ``finish`` with the final row (completed, interrupted or failed) after that row is written."""

    def start(self, run_id: str, epochs: int, steps_per_epoch: int, first_epoch: int, unit: str = "epoch") -> None: ...
    def step(self, loss: float | None) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    def finish(self, row: dict[str, Any]) -> None: ...


class SilentReporter:
    def start(self, run_id, epochs, steps_per_epoch, first_epoch, unit="epoch"):
        pass

    def step(self, loss):
        pass

    def epoch(self, record):
        pass

    def close(self):
        pass

    def finish(self, row):
        pass
