"""Reading rows: a folder's runs as a DataFrame (``load_results``), one run's row by id, prefix or path
(``read_row``, ``find_run``). Rows of every schema version read alike: ``compat.upgrade_table`` fills in what an
older row lacks, the same way for one row and for a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..compat import CONSULTED, INTEGERS, upgrade_frame, upgrade_table
from ..errors import ResultsError
from ..run_ids import check_run_id
from .bulk import read_runs_table
from .checks import read_run
from .folder_errors import in_folder
from .layout import ResultsDir, check_folder
from .rows import COLUMNS


@in_folder("results_dir")  # a full disk, a read-only folder: one results error
def load_results(results_dir: Path, columns: list[str] | None = None, status: str | None = None,
                 warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """All runs under ``results_dir`` as one DataFrame (empty, with the standard columns, when there are none).

    A file under runs/ that is not a sound row (``read_run``) is skipped and named through ``warn`` (default:
    one ``results warning:`` line on stderr): a listing or a report over many runs goes on with the others, and
    never counts a file it could not check. Commands about one run (``read_row``, ``find_run``) fail instead.
    """
    layout = ResultsDir(results_dir)
    check_folder(layout)
    files = sorted(layout.runs.glob("*.parquet")) if layout.runs.is_dir() else []
    cols = list(columns or COLUMNS)
    if status is not None and "status" not in cols:
        cols.append("status")
    needed = list(dict.fromkeys(cols + list(CONSULTED)))  # what an upgrade of an older row may consult
    table = read_runs_table(files, needed, warn) if files else None
    if table is None:
        df = pd.DataFrame(columns=cols)
        for column in (c for c in INTEGERS if c in cols):
            df[column] = df[column].astype(int)
    else:
        df = upgrade_frame(table, cols)
    if status is not None:
        df = df[df["status"] == status].reset_index(drop=True)
    return df


def _row_of(path: Path) -> dict[str, Any]:
    return upgrade_table(read_run(path), COLUMNS).to_pylist()[0]


@in_folder("results_dir")  # a full disk, a read-only folder: one results error
def read_row(results_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The row of ``run_id``, or None when the run has none; a row file that is not sound is a ResultsError."""
    layout = ResultsDir(results_dir)
    check_folder(layout)
    path = layout.row(run_id)
    return _row_of(path) if path.exists() else None


@in_folder("results_dir")  # a full disk, a read-only folder: one results error
def find_run(results_dir: Path, run: str) -> dict[str, Any]:
    """A run's row by id, unique id prefix, or the path of its Parquet file."""
    path = Path(run)
    if path.suffix == ".parquet" and path.exists():
        return _row_of(path)
    layout = ResultsDir(results_dir)
    check_folder(layout)
    check_run_id(run)
    exact = layout.row(run)
    if exact.exists():
        return _row_of(exact)
    matches = sorted(layout.runs.glob(f"{run}*.parquet")) if layout.runs.is_dir() else []
    if len(matches) == 1:
        return _row_of(matches[0])
    if not matches:
        raise ResultsError(f"no run '{run}' under {layout.runs}; list runs with `ls {layout.runs}`")
    names = ", ".join(m.stem for m in matches[:5])
    raise ResultsError(f"run '{run}' is ambiguous under {layout.runs}: {names}{' ...' if len(matches) > 5 else ''}")

