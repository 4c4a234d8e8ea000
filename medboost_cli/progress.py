"""Rich progress displays: training runs (the engine itself stays silent unless given a reporter) and downloads."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def download_bar(console: Console | None, name: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
    """A bar for one file's download on ``console`` (nothing when None), starting at ``done`` bytes of ``total``
    (a resumed download starts part-way); yields the function to call with each block's length."""
    if console is None:
        yield lambda n: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(name, total=total, completed=done)
        yield lambda n: progress.advance(task, n)


def eta_text(seconds: list[float], epochs_left: int) -> str:
    """The time the remaining epochs will take at the mean pace of those timed so far, as H:MM:SS or M:SS."""
    if not seconds or epochs_left <= 0:
        return "0:00"
    left = round(sum(seconds) / len(seconds) * epochs_left)
    hours, rest = divmod(left, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RichReporter:
    """A progress bar (with the time remaining) for one run, and a line per epoch: losses, validation metrics, a
    star on the best epoch so far, the epoch's seconds and the ETA of the run's end."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None
        self.epochs = 0
        self.unit = "epoch"  # "point" where a step budget cuts training into evaluation points (budget.py)
        self.loss = float("nan")
        self.best: dict[str, Any] = {}
        self.seconds: list[float] = []  # each epoch's time in this process (a resumed run starts anew)

    def start(self, run_id: str, epochs: int, steps_per_epoch: int, first_epoch: int, unit: str = "epoch") -> None:
        self.epochs, self.unit = epochs, unit
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            f"{run_id} {unit} {first_epoch + 1}/{epochs}", total=(epochs - first_epoch) * steps_per_epoch,
            loss="-", val="-",
        )

    def step(self, loss: float | None) -> None:
        if loss is not None:
            self.loss = loss
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{self.loss:.4f}")

    def epoch(self, record: dict[str, Any]) -> None:
        if self.progress is None:
            return
        e = record["epoch"] + 1
        val = f"auc {record['val_auc']:.4f} acc {record['val_acc']:.4f}"
        self.progress.update(self.task, description=self.progress.tasks[0].description.rsplit(f" {self.unit}", 1)[0]
                             + f" {self.unit} {min(e + 1, self.epochs)}/{self.epochs}", val=val)
        best = " *" if record["best_epoch"] == record["epoch"] else ""
        self.seconds.append(record["seconds"])
        self.progress.console.print(
            f"{self.unit} {e:>3}/{self.epochs}  train loss {record['train_loss']:.4f}  val loss {record['val_loss']:.4f}  "
            f"{val}{best}  ({record['seconds']:.1f}s, ETA {eta_text(self.seconds, self.epochs - e)})"
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, row: dict[str, Any]) -> None:
        pass  # the command prints the final row itself
