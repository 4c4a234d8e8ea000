"""How a launch reports: a line per run as it starts and ends, the counts and a table at the end, and
``RunsFailed``, the launch's error when some of its runs failed."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.table import Table

from ..errors import MedboostError

if TYPE_CHECKING:
    from .jobs import Job, Outcome


def start_line(job: Job, index: int, total: int) -> str:
    where = f" on GPU {job.device}" if job.device is not None else ""
    return f"[{index}/{total}] start {job.run_id}{where}"


def end_line(o: Outcome) -> str:
    if o.status in ("trained", "skipped") and o.test_auc is not None:
        what = f"test AUC {o.test_auc:.4f}"
    else:
        what = f"{o.error} (log: {o.log})" if o.error else ""
    return f"{o.status:<11} {o.run_id}: {what} ({o.seconds:.0f} s)"


def summary_line(outcomes: list[Outcome], completed_before: int, busy_before: int, not_started: int = 0) -> str:
    """The counts of a launch: trained, skipped, failed, interrupted (and busy, not started)."""
    counts = Counter(o.status for o in outcomes)
    parts = [f"{counts['trained']} trained", f"{completed_before + counts['skipped']} skipped (completed)",
             f"{counts['failed']} failed", f"{counts['interrupted']} interrupted"]
    if busy_before + counts["busy"]:
        parts.append(f"{busy_before + counts['busy']} being trained elsewhere")
    if not_started:
        parts.append(f"{not_started} not started")
    return ", ".join(parts)


def summary_table(outcomes: list[Outcome]) -> Table:
    """The runs a launch handled: how each ended, its seconds (in its process), test AUC or error."""
    table = Table()
    pooled = any(o.overhead_s is not None for o in outcomes)
    columns = ["run", "status", "seconds"] + (["start-up s"] if pooled else []) + ["test AUC", "error"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("run", "status", "error") else "right")
    for o in outcomes:
        auc = f"{o.test_auc:.4f}" if o.test_auc is not None else ""
        overhead = [f"{o.overhead_s:.1f}" if o.overhead_s is not None else ""] if pooled else []
        table.add_row(o.run_id, o.status, f"{o.seconds:.1f}", *overhead, auc, o.error or "")
    return table


class RunsFailed(MedboostError):
    """Some runs of a launch failed: the launch exits with the first failure's code and kind."""

    def __init__(self, failed: list[Outcome], total: int):
        first = failed[0]
        super().__init__(f"{len(failed)} of {total} runs failed; the first, {first.run_id}: {first.error} "
                         f"(log: {first.log})")
        self.exit_code = first.exit_code or 1
        kind = (first.error or "").split(":", 1)[0]
        self.kind = kind if kind.endswith(" error") else "error"
