"""Results: the one owner of run ids, the results folder's layout, the row's columns and their reading/writing.

A results folder (``--results-dir``, else ``$MEDBOOST_RESULTS``, else ``./results``) holds::

    runs/RUN_ID.parquet            one row per run (``COLUMNS``), replaced atomically as the run progresses
    checkpoints/RUN_ID/last.pt     the last finished epoch's training state (deleted once the run completes)
    checkpoints/RUN_ID/best.pt     the weights of the best validation epoch
    bench/BENCH_ID.parquet         one row per ``medboost bench`` case
    locks/RUN_ID.lock              held while a process trains the run (medboost_cli.locks)
    logs/RUN_ID.log                a run's log lines and errors when a launcher ran it (medboost_cli.launchers)

A run id is ``TASK-BACKBONE-BOOSTER-CONFIGHASH-sSEED`` (``make_run_id``): the configuration hash covers
everything that defines the experiment except the seed, so the id without its seed (``cell_id``) names one
configuration, which is one cell of a report. One file per run makes concurrent writers safe: a row is
written when the run starts (status ``running``) and replaced when it ends (``completed``, ``failed`` or
``interrupted``). Per-sample test scores and labels are kept in the row, so statistics need nothing else.

Rows carry ``schema_version``; rows written before it existed (version 1) are read with the columns they
lack filled in (``_upgrade``).

Every run file is checked when it is read: a readable Parquet file with medboost's columns and one row
(``_version_problem``, ``_columns_problem``), whose run id is its file name (so no run is counted twice), whose
status is known, whose ``config_json`` is a recipe, and whose test labels and scores match in length with finite
scores (``_rows_problems``). The same checks serve one file (``_read_run``) and a whole folder read in bulk
(``_read_runs_at_once``), which leaves a folder with any unsound file to ``_read_run`` file by file. A file that
fails is skipped with one ``results warning:`` line by commands over many runs (``runs``, ``report``,
``ablate``), so that they go on and never count it, and is an error (exit 5) for commands about one run
(``evaluate``, ``report gradcam``, and ``train``, which never replaces a row it cannot read).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ConfigError, ResultsError
from .fileio import atomic_write

SCHEMA_VERSION = 3  # 2: added schema_version and lm_norm; 3: test_sens, test_spec, fold, folds

# Columns every row has, in order.
COLUMNS = [
    "run_id", "status", "task", "flag", "size", "backbone", "booster", "llm", "layer", "frozen", "llm_init",
    "lm_norm", "seed", "fold", "folds", "epochs", "epochs_done", "best_epoch", "select_metric", "val_acc", "val_auc", "test_acc",
    "test_auc", "test_sens", "test_spec", "params_total", "params_trainable", "train_seconds", "images_per_second", "peak_memory_mb",
    "memory_kind", "device", "world_size", "devices", "precision", "frozen_sha256", "config_hash", "config_json", "history_json",
    "versions_json", "git_commit", "started_at", "ended_at", "error", "test_labels", "test_scores",
    "schema_version",
]
# Columns added after schema 1 and what they state for rows written before them: those runs had no final norm
# after F_L (lm_norm "none") wherever they had an F_L at all.
ADDED_AFTER_V1 = ("lm_norm", "schema_version")
# Columns added after schema 2: None in older rows (those runs were MedMNIST runs, and sens/spec were not computed).
ADDED_AFTER_V2 = ("test_sens", "test_spec", "fold", "folds")
_WITH_LM = ("rllm", "out", "hybrid")


# Columns added without a schema bump (rows of schema 2 and 3 may lack them), and what they state for rows
# written before them: one process, on ``device``.
ADDED_IN_V2 = ("world_size", "devices")


def _old_value(column: str, row: dict[str, Any]) -> Any:
    if column == "schema_version":
        return 1
    if column == "lm_norm":
        return "none" if row.get("booster") in _WITH_LM else None
    if column == "world_size":
        return 1
    if column == "devices":
        return json.dumps([row["device"]]) if row.get("device") is not None else None
    return None


# ------------------------------------------------------------------------------------------------ run ids

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def make_run_id(task: str, backbone: str, booster: str, config_hash: str, seed: int) -> str:
    return check_run_id(f"{task}-{backbone}-{booster}-{config_hash}-s{seed}")


def cell_id(run_id: str) -> str:
    """A run id without its seed suffix: the same for every seed of one configuration (one report cell)."""
    return run_id.rsplit("-s", 1)[0]


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is made of letters, digits and ``._+-`` (so it can never name a path outside the folder)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ConfigError(f"'{run_id}' is not a run id (letters, digits and . _ + - only, at most 200 characters)")
    return run_id


# ------------------------------------------------------------------------------------------------ layout


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


# ------------------------------------------------------------------------------------------------ rows


def new_row(**values: Any) -> dict[str, Any]:
    """A row with every column, ``None`` where ``values`` says nothing; an unknown column is a bug. The columns
    that follow from others are filled in here (``derived_columns``), so that every writer's rows have them."""
    unknown = sorted(set(values) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown result column(s) {unknown}")
    values = derived_columns(values) | {k: v for k, v in values.items() if v is not None}
    return {c: values.get(c) for c in COLUMNS} | {"schema_version": SCHEMA_VERSION}


def derived_columns(values: dict[str, Any]) -> dict[str, Any]:
    """What a row's other columns determine: ``test_sens`` and ``test_spec`` (metrics.binary_report, threshold
    0.5) from binary per-sample test labels (one column) and scores (two), ``fold`` and ``folds`` from the
    recipe's data.fold and data.folds for a cohort run (``config_json``)."""
    out: dict[str, Any] = {}
    labels, scores = values.get("test_labels"), values.get("test_scores")
    if labels and scores and len(labels[0]) == 1 and len(scores[0]) == 2:
        from .metrics import binary_report

        report = binary_report(np.asarray(labels), np.asarray(scores))
        out |= {"test_sens": report["sens"], "test_spec": report["spec"]}
    if isinstance(values.get("config_json"), str):
        data = json.loads(values["config_json"]).get("data", {})
        if data.get("folds") is not None:
            out |= {"fold": data.get("fold"), "folds": data["folds"]}
    return out


def write_row(results_dir: Path, row: dict[str, Any]) -> Path:
    """Write (or replace) a run's row: to a temporary file in the same folder, then an atomic rename.

    Without column statistics (the footer would hold the long JSON columns twice more, as min and max) and without
    dictionary pages (one row has nothing to share): the file is less than half the size (11 KB instead of 27 KB
    for a row with 156 test scores) and reads 10-15% faster. Files written with both read the same."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row lacks columns {missing}")
    table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS}])
    return atomic_write(ResultsDir(results_dir).row(row["run_id"]),
                        lambda tmp: pq.write_table(table, tmp, use_dictionary=False, write_statistics=False))


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in columns if c in names] if columns else None)
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"{path}: not a readable Parquet result ({e}); delete it or rerun that run") from None


# ------------------------------------------------------------------------------------------------ the row schema

RUN_STATUSES = ("running", "completed", "failed", "interrupted")
# Read and checked in every row, whichever columns the caller asks for, so that every command counts the same runs.
IDENTITY = ["run_id", "status", "config_json", "schema_version"]
SCORES = ("test_labels", "test_scores")


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _away(path: Path) -> str:
    return f"move it out of {path.parent} (or delete it)"


def _read_run(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The one row of a run file (``columns`` of it, all when None), checked against the row schema: a file that
    is not a readable, one-row medboost row with sound values is a ResultsError naming it, the problem and what to
    do. The one place where a single run file is read (``_read_runs_at_once`` reads many at once with the same
    checks, and leaves every file it finds fault with to this function)."""
    try:
        with pq.ParquetFile(path) as file:
            names, n_rows = file.schema_arrow.names, file.metadata.num_rows
            version = file.read(columns=["schema_version"]).column(0)[0].as_py() \
                if "schema_version" in names and n_rows else None
            problem = _version_problem(version) or _columns_problem(path, names, n_rows)
            if problem:
                raise ResultsError(f"{path}: {problem}")
            table = file.read(columns=_to_read(columns, names))
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"{path}: not a readable Parquet result ({e}); {_away(path)}, then rerun that run") from None
    problem = _rows_problems([path], table)[0]
    if problem:
        raise ResultsError(f"{path}: {problem}")
    return _selected(table, columns)


def _to_read(columns: list[str] | None, names: list[str]) -> list[str]:
    """What is read of a run file with the columns ``names``: the ``columns`` asked for (all when None) and what
    every row is checked by, in that order."""
    return [c for c in dict.fromkeys(list(columns or COLUMNS) + IDENTITY + list(SCORES)) if c in names]


def _version_problem(version: Any) -> str | None:
    """A row schema newer than this medboost reads (``version`` is the row's schema_version, None before it existed)."""
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return f"written by a newer medboost (row schema {version}; this one reads up to {SCHEMA_VERSION}); " \
               f"upgrade medboost to read it"
    return None


def _columns_problem(path: Path, names: list[str], n_rows: int) -> str | None:
    """What is wrong with a run file's columns (``names``) and row count, or None."""
    lacks = [c for c in COLUMNS if c not in names and c not in ADDED_AFTER_V1 + ADDED_AFTER_V2 + ADDED_IN_V2]
    foreign = [c for c in names if c not in COLUMNS]
    if lacks or foreign:
        what = "; ".join(([f"lacks {_names(lacks)}"] if lacks else []) +
                         ([f"has columns medboost never writes: {_names(foreign)}"] if foreign else []))
        return f"not a run row that medboost wrote ({what}); {_away(path)}"
    if n_rows != 1:
        return f"holds {n_rows} rows where a run file holds one; {_away(path)}"
    return None


def _rows_problems(paths: list[Path], table: pa.Table) -> list[str | None]:
    """What is wrong with the values of each row of ``table`` (row i read from ``paths[i]``, whose columns passed
    ``_columns_problem``), None where nothing. The run id, status and recipe are checked row by row (a recipe once
    per distinct ``config_json``), the test scores column-wise over all rows (``_scores_problems``), so that one
    table of 10,000 rows is checked in well under a second."""
    from .recipes import saved_recipe  # recipes imports this module

    recipes: dict[str, str | None] = {}

    def recipe_problem(config_json: str) -> str | None:
        if config_json not in recipes:
            try:
                saved_recipe(config_json)
                recipes[config_json] = None
            except ResultsError as e:
                recipes[config_json] = str(e)
        return recipes[config_json]

    run_ids, statuses, configs = (table.column(c).to_pylist() for c in ("run_id", "status", "config_json"))
    scores = _scores_problems(table, run_ids, paths)
    problems: list[str | None] = []
    for path, run_id, status, config_json, scores_problem in zip(paths, run_ids, statuses, configs, scores):
        problem = None
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            problem = f"its run_id {run_id!r} is not a run id; {_away(path)}"
        elif path.stem != run_id:
            if path.with_name(f"{run_id}.parquet").exists():
                problem = f"claims run {run_id}, which {run_id}.parquet holds too (a copy?); {_away(path)}, so " \
                          f"that the run counts once"
            else:
                problem = f"holds run {run_id} but is named {path.name}; rename it to {run_id}.parquet"
        elif status not in RUN_STATUSES:
            problem = f"its status {status!r} is none of {', '.join(RUN_STATUSES)}; {_away(path)}"
        elif config_json is not None:
            problem = recipe_problem(config_json)
            problem = problem and f"{problem}; {_away(path)}"
        problems.append(problem or scores_problem)
    return problems


def _scores_problems(table: pa.Table, run_ids: list[Any], paths: list[Path]) -> list[str | None]:
    """Per-sample test labels and scores of each row: both or neither, one score row per label row, every score a
    finite number. Checked with Arrow and numpy over all rows at once, without turning the lists into Python
    objects; where a score is not finite, which row it came from is followed back through the list levels."""
    labels, scores = (table.column(c).combine_chunks() for c in SCORES)
    n = len(table)
    has_labels, has_scores = (pc.is_valid(c).to_numpy(zero_copy_only=False) for c in (labels, scores))

    def lengths(column: pa.Array) -> np.ndarray:
        return pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)

    def is_lists(column: pa.Array) -> bool:
        return pa.types.is_list(column.type) or pa.types.is_large_list(column.type)

    levels, values = [], scores  # the list levels of the scores, outermost first, and their numbers
    while is_lists(values):
        levels.append(values)
        values = pc.list_flatten(values)
    if pa.types.is_null(values.type):  # lists of nothing but nulls
        values = values.cast(pa.float64())
    numbers = pa.types.is_floating(values.type) or pa.types.is_integer(values.type)
    lists = is_lists(labels) or pa.types.is_null(labels.type)
    n_labels = lengths(labels) if is_lists(labels) else np.zeros(n, dtype=np.int64)
    n_scores = lengths(scores) if is_lists(scores) else np.zeros(n, dtype=np.int64)
    not_finite = np.zeros(n, dtype=np.int64)
    finite = pc.fill_null(pc.is_finite(values), False) if numbers else None
    if finite is not None and not pc.all(finite).as_py():  # count them per row: follow each value to its row
        rows = np.arange(n)
        for level in levels:
            rows = np.repeat(rows, lengths(level))
        not_finite = np.bincount(rows[~finite.to_numpy(zero_copy_only=False)], minlength=n)
    damaged = (n_labels != n_scores) | (not_finite > 0) if numbers and lists else np.ones(n, dtype=bool)
    suspect = (has_labels != has_scores) | (has_labels & has_scores & damaged)
    problems: list[str | None] = [None] * n
    for i in np.flatnonzero(suspect):
        retrain, path = f"retrain {run_ids[i]} with --force", paths[i]
        if has_labels[i] != has_scores[i]:
            has, lacks = ("test_labels", "test_scores") if has_labels[i] else ("test_scores", "test_labels")
            problems[i] = f"has {has} but no {lacks}; {retrain}"
        elif not numbers:
            problems[i] = f"its test_scores are {scores.type}, not lists of numbers; {_away(path)}"
        elif not lists:
            problems[i] = f"its test_labels are {labels.type}, not lists; {_away(path)}"
        elif n_labels[i] != n_scores[i]:
            problems[i] = f"has {n_scores[i]} rows of test_scores for {n_labels[i]} test_labels (a damaged row); " \
                          f"{retrain}"
        else:
            problems[i] = f"{not_finite[i]} of its test_scores are not finite numbers (NaN, inf or missing); {retrain}"
    return problems


def _read_runs_at_once(files: list[Path], columns: list[str] | None) -> tuple[pa.Table | None, list[Path]] | None:
    """What ``read_runs_table`` reads of ``files``, read and checked in bulk: the table of the sound files' rows (in
    the files' order; None when no file is sound) and the files found at fault (in the files' order), which the
    caller reads one by one with ``_read_run`` to name each; None when the sound files' tables do not join (their
    columns conflict), so that the caller reads every file one by one.

    Arrow spends about half a millisecond of CPU on each small file whatever is read of it (its footer alone takes
    half of that). ``_read_run`` spends several times that: a second read, Arrow's thread pool for each read, a
    dozen Arrow calls and a recipe to check per file. Here each file is opened and read once, with the columns it is
    checked by, in a few threads (Arrow leaves the GIL while it reads); the tables are joined as ``read_runs_table``
    joins them, and the checks of ``_read_run`` run once over the joined table: ``_columns_problem`` once per
    distinct set of columns, ``_version_problem`` and ``_rows_problems`` over the rows. (A pyarrow dataset of all
    files scanned in one go costs more: about 0.25 ms per file for the footers and 0.45 ms for the scan.)"""

    def read(chunk: list[Path]) -> list[tuple[tuple[str, ...], int, pa.Table] | None]:
        read_back = []
        for path in chunk:
            try:
                with pq.ParquetFile(path) as file:
                    names = file.schema_arrow.names
                    read_back.append((tuple(names), file.metadata.num_rows,
                                      file.read(columns=_to_read(columns, names), use_threads=False)))
            except (pa.ArrowException, OSError):  # not readable: _read_run says why
                read_back.append(None)
        return read_back

    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]
    with ThreadPoolExecutor(max_workers=max(1, min(len(chunks), os.cpu_count() or 1))) as pool:
        read_back = [got for chunk in pool.map(read, chunks) for got in chunk]
    at_fault, columns_ok = set(), {}
    for i, (path, got) in enumerate(zip(files, read_back)):
        if got is not None and (got[0], got[1]) not in columns_ok:
            columns_ok[got[0], got[1]] = _columns_problem(path, list(got[0]), got[1]) is None
        if got is None or not columns_ok[got[0], got[1]]:
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
        row_problems = _rows_problems([files[i] for i in sound], table)
        keep = [not (_version_problem(v) or problem) for v, problem in zip(versions, row_problems)]
        at_fault.update(i for i, ok in zip(sound, keep) if not ok)
        table = _selected(table.filter(pa.array(keep)), columns) if any(keep) else None
    return table, [files[i] for i in sorted(at_fault)]


def _selected(table: pa.Table, columns: list[str] | None) -> pa.Table:
    """The ``columns`` (all when None) of a table read with ``_to_read``, in the table's order."""
    return table if columns is None else table.select([c for c in table.column_names if c in columns])


def read_runs_table(files: list[Path], columns: list[str] | None = None, warn=None) -> pa.Table | None:
    """The rows of many run files as one table (None when none is sound). The files are read and checked in bulk
    (``_read_runs_at_once``, two to three times as fast as one by one); each file found at fault is read again
    alone by ``_read_run``, skipped and named through ``warn`` (in the files' order). Where the bulk route cannot
    join the files' tables, each file is read and checked by ``_read_run`` in a pool of threads (Parquet decoding
    and file system waits release the GIL), with the same warnings. Files whose columns differ (an older schema, a
    column that is null in one row and typed in another) are unified: missing columns are null, null types take
    the other files' types."""
    if not files:
        return None

    def read(path: Path) -> pa.Table | ResultsError:
        try:
            return _read_run(path, columns)
        except ResultsError as e:
            return e

    at_once = _read_runs_at_once(files, columns)
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


def _upgrade(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A row of any schema version as one with ``columns``: what an older row lacks is filled in."""
    if row.get("schema_version") is None:
        row = row | {c: _old_value(c, row) for c in ADDED_AFTER_V1}
    row = row | {c: _old_value(c, row) for c in ADDED_IN_V2 if row.get(c) is None}
    return {c: row.get(c) for c in columns}


def warn_line(message: str) -> None:
    """One ``results warning:`` line on stderr (looked up when called, so that redirections apply)."""
    print(f"results warning: {message}", file=sys.stderr)


def _check_folder(layout: ResultsDir) -> None:
    for folder in (layout.root, layout.runs):
        if folder.exists() and not folder.is_dir():
            raise ResultsError(f"{folder}: is a file, not a results folder; point --results-dir (or $MEDBOOST_RESULTS) "
                               f"at the folder that `medboost train` writes")


def load_results(results_dir: Path, columns: list[str] | None = None, status: str | None = None,
                 warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """All runs under ``results_dir`` as one DataFrame (empty, with the standard columns, when there are none).

    A file under runs/ that is not a sound row (``_read_run``) is skipped and named through ``warn`` (default:
    one ``results warning:`` line on stderr): a listing or a report over many runs goes on with the others, and
    never counts a file it could not check. Commands about one run (``read_row``, ``find_run``) fail instead.
    """
    layout = ResultsDir(results_dir)
    _check_folder(layout)
    files = sorted(layout.runs.glob("*.parquet")) if layout.runs.is_dir() else []
    cols = list(columns or COLUMNS)
    if status is not None and "status" not in cols:
        cols.append("status")
    needed = list(dict.fromkeys(cols + ["schema_version", "booster", "device"]))  # what an upgrade may consult
    table = read_runs_table(files, needed, warn) if files else None
    df = table.to_pandas() if table is not None else pd.DataFrame(columns=needed)
    old = df["schema_version"].isna() if "schema_version" in df else pd.Series(True, index=df.index)
    if old.any():  # rows written before a column existed: fill it with what those runs did
        records = df.loc[old].to_dict("records")
        for column in cols:
            if column not in df:
                df[column] = None
            if column in ADDED_AFTER_V1:
                df[column] = df[column].astype(object)
                df.loc[old, column] = pd.Series([_old_value(column, r) for r in records], index=df.index[old],
                                                dtype=object)
    for column in cols:  # no row of them has a column added since: None for all
        if column not in df:
            df[column] = None
    for column in (c for c in ADDED_IN_V2 if c in cols):  # rows written before the column, in schema 2
        lacking = df[column].isna() if column in df else pd.Series(True, index=df.index)
        if lacking.any():
            values = [_old_value(column, r) for r in df.loc[lacking, ["device"]].to_dict("records")]
            df[column] = (df[column] if column in df else pd.Series(None, index=df.index)).astype(object)
            df.loc[lacking, column] = pd.Series(values, index=df.index[lacking], dtype=object)
    if "world_size" in cols:
        df["world_size"] = df["world_size"].astype(int)
    if "schema_version" in cols:
        df["schema_version"] = df["schema_version"].astype(int)
    df = df[cols]
    if status is not None:
        df = df[df["status"] == status].reset_index(drop=True)
    return df


def _row_of(path: Path) -> dict[str, Any]:
    return _upgrade(_read_run(path).to_pylist()[0], COLUMNS)


def read_row(results_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The row of ``run_id``, or None when the run has none; a row file that is not sound is a ResultsError."""
    layout = ResultsDir(results_dir)
    _check_folder(layout)
    path = layout.row(run_id)
    return _row_of(path) if path.exists() else None


def find_run(results_dir: Path, run: str) -> dict[str, Any]:
    """A run's row by id, unique id prefix, or the path of its Parquet file."""
    path = Path(run)
    if path.suffix == ".parquet" and path.exists():
        return _row_of(path)
    layout = ResultsDir(results_dir)
    _check_folder(layout)
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


def write_bench_row(results_dir: Path, row: dict[str, Any]) -> Path:
    table = pa.Table.from_pylist([row])
    return atomic_write(ResultsDir(results_dir).bench / f"{row['bench_id']}.parquet",
                        lambda tmp: pq.write_table(table, tmp))


def load_bench(results_dir: Path) -> pd.DataFrame:
    files = sorted(ResultsDir(results_dir).bench.glob("*.parquet"))
    return pd.DataFrame([r for f in files for r in _read_table(f).to_pylist()])


# ------------------------------------------------------------------------------------------------ provenance


@cache
def package_versions() -> str:
    versions = {"python": sys.version.split()[0]}
    for name in ("medboost", "torch", "timm", "transformers", "numpy", "medmnist", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return json.dumps(versions, sort_keys=True)


@cache
def git_commit() -> str | None:
    """The commit of the medboost checkout that runs (with '-dirty' for uncommitted changes), if it is one."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
