"""Many run files read as one table, checked as ``checks.read_run`` checks one: in bulk where the files allow,
file by file where they do not. A file that fails is skipped with one ``results warning:`` line."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ResultsError
from .checks import columns_problem, read_run, rows_problems, selected, to_read, version_problem


def read_runs_at_once(files: list[Path], columns: list[str] | None) -> tuple[pa.Table | None, list[Path]] | None:
    """What ``read_runs_table`` reads of ``files``, read and checked in bulk: the table of the sound files' rows (in
    the files' order; None when no file is sound) and the files found at fault (in the files' order), which the
    caller reads one by one with ``read_run`` to name each; None when the sound files' tables do not join (their
    columns conflict), so that the caller reads every file one by one.

    Arrow spends about half a millisecond of CPU on each small file whatever is read of it (its footer alone takes
    half of that). ``read_run`` spends several times that: a second read, Arrow's thread pool for each read, a
    dozen Arrow calls and a recipe to check per file. Here each file is opened and read once, with the columns it is
    checked by, in a few threads (Arrow leaves the GIL while it reads); the tables are joined as ``read_runs_table``
    joins them, and the checks of ``read_run`` run once over the joined table: ``columns_problem`` once per
    distinct set of columns, ``version_problem`` and ``rows_problems`` over the rows. (A pyarrow dataset of all
    files scanned in one go costs more: about 0.25 ms per file for the footers and 0.45 ms for the scan.)"""

    def read(chunk: list[Path]) -> list[tuple[tuple[str, ...], int, pa.Table] | None]:
        read_back = []
        for path in chunk:
            try:
                with pq.ParquetFile(path) as file:
                    names = file.schema_arrow.names
                    read_back.append((tuple(names), file.metadata.num_rows,
                                      file.read(columns=to_read(columns, names), use_threads=False),
                                      file.schema_arrow))
            except (pa.ArrowException, OSError):  # not readable: read_run says why
                read_back.append(None)
        return read_back

    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]
    with ThreadPoolExecutor(max_workers=max(1, min(len(chunks), os.cpu_count() or 1))) as pool:
        read_back = [got for chunk in pool.map(read, chunks) for got in chunk]
    at_fault, columns_ok = set(), {}
    for i, (path, got) in enumerate(zip(files, read_back)):
        if got is not None and (got[3], got[1]) not in columns_ok:
            columns_ok[got[3], got[1]] = columns_problem(path, list(got[0]), got[1], got[3]) is None
        if got is None or not columns_ok[got[3], got[1]]:
            at_fault.add(i)
    sound = [i for i in range(len(files)) if i not in at_fault]
    table = None
    if sound:
        try:
            table = pa.concat_tables([read_back[i][2] for i in sound], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        versions = table.column("schema_version").to_pylist() if "schema_version" in table.column_names \
            else [None] * len(sound)
        row_problems = rows_problems([files[i] for i in sound], table)
        keep = [not (version_problem(v) or problem) for v, problem in zip(versions, row_problems)]
        at_fault.update(i for i, ok in zip(sound, keep) if not ok)
        table = selected(table.filter(pa.array(keep)), columns) if any(keep) else None
    return table, [files[i] for i in sorted(at_fault)]



def read_runs_table(files: list[Path], columns: list[str] | None = None, warn=None) -> pa.Table | None:
    """The rows of many run files as one table (None when none is sound). The files are read and checked in bulk
    (``read_runs_at_once``, two to three times as fast as one by one); each file found at fault is read again
    alone by ``read_run``, skipped and named through ``warn`` (in the files' order). Where the bulk route cannot
    join the files' tables, each file is read and checked by ``read_run`` in a pool of threads (Parquet decoding
    and file system waits release the GIL), with the same warnings. Files whose columns differ (an older schema, a
    column that is null in one row and typed in another) are unified: missing columns are null, null types take
    the other files' types."""
    if not files:
        return None

    def read(path: Path) -> pa.Table | ResultsError:
        try:
            return read_run(path, columns)
        except ResultsError as e:
            return e

    at_once = read_runs_at_once(files, columns)
    if at_once is not None:
        table, at_fault = at_once
        named = [read(path) for path in at_fault]
        if all(isinstance(e, ResultsError) for e in named):  # each file at fault, named as reading it alone names it
            for e in named:
                (warn or warn_line)(f"skipping {e}")
            return table
        # a file found at fault in bulk reads soundly alone (replaced meanwhile): read every file one by one

    with ThreadPoolExecutor(max_workers=max(1, min(16, 4 * (os.cpu_count() or 1), len(files)))) as pool:
        read_back = list(pool.map(read, files))
    tables, read_files = [], []
    for path, got in zip(files, read_back):
        if isinstance(got, ResultsError):
            (warn or warn_line)(f"skipping {got}")
        else:
            tables.append(got)
            read_files.append(path)
    if not tables:
        return None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        schema = tables[0].schema
        for path, table in zip(read_files, tables):
            try:
                schema = pa.unify_schemas([schema, table.schema], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise ResultsError(f"{path}: its columns do not match the other runs' ({str(e).splitlines()[0]}); "
                                   f"delete it or rerun that run") from None
        raise



def warn_line(message: str) -> None:
    """One ``results warning:`` line on stderr (looked up when called, so that redirections apply)."""
    print(f"results warning: {message}", file=sys.stderr)

