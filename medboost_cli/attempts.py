"""Where one attempt at training a run writes, and how a finished attempt takes the place of the result before it.

A run without a completed row trains in place: its row is runs/RUN_ID.parquet, its checkpoints
checkpoints/RUN_ID/best.pt and last.pt. A completed run trained again (``--force``) keeps its result until the new
one is whole: the attempt is *staged*. Its row (``running``, then ``failed`` or ``interrupted`` if it ends so) is
checkpoints/RUN_ID/row.pending.parquet and its best checkpoint checkpoints/RUN_ID/best.pending.pt, while
runs/RUN_ID.parquet and best.pt still hold the completed result; its last.pt is in the usual place, so that
``--force --resume`` continues it.

A staged attempt that completes (``commit``) first writes its completed row as the pending row (the commit
record), then renames best.pending.pt onto best.pt and the pending row onto runs/RUN_ID.parquet, then removes
last.pt. Each step is one rename, so a process killed at any moment leaves a completed row in runs/; one killed
between the renames leaves the commit record, and the next ``train`` of the run finishes the swap
(``roll_forward``) before anything else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .results import ResultsDir, read_row, write_row


@dataclass(frozen=True)
class Attempt:
    """One attempt at a run: in place, or staged beside the run's completed result."""

    results: ResultsDir
    run_id: str
    staged: bool = False

    @property
    def row_path(self) -> Path:
        return self.results.pending_row(self.run_id) if self.staged else self.results.row(self.run_id)

    @property
    def best(self) -> Path:
        return self.results.pending_best(self.run_id) if self.staged else self.results.best(self.run_id)

    @property
    def last(self) -> Path:
        return self.results.last(self.run_id)

    def write(self, row: dict[str, Any]) -> None:
        write_row(self.results.root, row, self.row_path)

    def commit(self, row: dict[str, Any]) -> None:
        """Make the completed ``row`` and this attempt's best checkpoint the run's result, then drop last.pt. A row
        that cannot be written is withdrawn; once written, it is the record that ``roll_forward`` completes."""
        try:
            self.write(row)
        except BaseException:
            self.withdraw()
            raise
        if self.staged:
            _swap(self.results, self.run_id)
        self.last.unlink(missing_ok=True)  # the optimiser state is not needed once the run is complete

    def withdraw(self) -> None:
        """Remove this attempt's row after its final row could not be written, so that no ``running`` row outlives
        the process; a staged attempt's removal leaves the completed result as it was."""
        try:
            self.row_path.unlink(missing_ok=True)
        except OSError:
            pass


def _swap(results: ResultsDir, run_id: str) -> None:
    pending_best = results.pending_best(run_id)
    if pending_best.exists():
        os.replace(pending_best, results.best(run_id))
    os.replace(results.pending_row(run_id), results.row(run_id))


def roll_forward(results: ResultsDir, run_id: str, log=print) -> None:
    """Finish the swap of a staged attempt that completed but was killed before its rows were swapped; a pending
    row that is not completed (a staged attempt still to resume) is left alone."""
    pending = results.pending_row(run_id)
    if not pending.exists():
        return
    try:
        status = pq.read_table(pending, columns=["status"]).column("status")[0].as_py()
    except (pa.ArrowException, OSError, KeyError, IndexError):  # torn or foreign: not a commit record
        return
    if status == "completed":
        _swap(results, run_id)
        results.last(run_id).unlink(missing_ok=True)
        log(f"{run_id}: finished replacing the completed result with the retrained one")


def attempt_row(results_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The row of the run's latest attempt: a retraining's pending row while there is one, else the run's row."""
    pending = ResultsDir(results_dir).pending_row(run_id)
    if pending.exists():
        try:
            return pq.read_table(pending).to_pylist()[0]
        except (pa.ArrowException, OSError, IndexError):
            pass
    return read_row(results_dir, run_id)


def pending_commit(results: ResultsDir, run_id: str) -> bool:
    """Whether a staged attempt's completion waits to be finished (``roll_forward``)."""
    return results.pending_row(run_id).exists()
