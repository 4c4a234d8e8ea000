"""Where everything of a results folder lives (``ResultsDir``); the folder's layout is listed in the package's
docstring (medboost_cli/results/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ResultsError
from ..run_ids import check_run_id


@dataclass(frozen=True)
class ResultsDir:
    """Where everything of a results folder lives."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def row(self, run_id: str) -> Path:
        return self.runs / f"{check_run_id(run_id)}.parquet"

    def checkpoints(self, run_id: str) -> Path:
        return self.root / "checkpoints" / check_run_id(run_id)

    def last(self, run_id: str) -> Path:
        return self.checkpoints(run_id) / "last.pt"

    def best(self, run_id: str) -> Path:
        return self.checkpoints(run_id) / "best.pt"

    def pending_best(self, run_id: str) -> Path:
        """The best checkpoint of a retraining of a completed run, until it completes (``attempts``)."""
        return self.checkpoints(run_id) / "best.pending.pt"

    def pending_row(self, run_id: str) -> Path:
        """The row of a retraining of a completed run, until it completes (``attempts``)."""
        return self.checkpoints(run_id) / "row.pending.parquet"

    def lock(self, run_id: str) -> Path:
        return self.root / "locks" / f"{check_run_id(run_id)}.lock"

    def log(self, run_id: str) -> Path:
        return self.root / "logs" / f"{check_run_id(run_id)}.log"

    def stale_writes(self, run_id: str) -> list[Path]:
        """Temporary files that killed writes of ``run_id`` left behind (``fileio.atomic_write`` names them
        ``.NAME.*.tmp``); only this run's, so that other runs writing into the folder are never touched."""
        row, ckpt = self.row(run_id), self.checkpoints(run_id)
        found = list(row.parent.glob(f".{row.name}.*.tmp")) if row.parent.is_dir() else []
        return found + (list(ckpt.glob(".*.tmp")) if ckpt.is_dir() else [])


def check_folder(layout: ResultsDir) -> None:
    """A results folder (or its runs/) that is a file is a ResultsError saying where to point instead."""
    for folder in (layout.root, layout.runs):
        if folder.exists() and not folder.is_dir():
            raise ResultsError(f"{folder}: is a file, not a results folder; point --results-dir (or $MEDBOOST_RESULTS) "
                               f"at the folder that `medboost train` writes")

