"""The row schema's checks: what a run file must be for medboost to count it. A readable Parquet file with
medboost's columns and one row (``version_problem``, ``columns_problem``), whose run id is its file name (so no run
is counted twice), whose status is known, whose ``config_json`` is a recipe, and whose test labels and scores match
in length with finite scores (``rows_problems``). ``read_run`` reads one file with them; ``bulk`` reads many at once
with the same checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..compat import ADDED_COLUMNS, SCHEMA_VERSION
from ..errors import ResultsError
from ..run_ids import is_run_id
from .rows import COLUMNS

RUN_STATUSES = ("running", "completed", "failed", "interrupted")
# Read and checked in every row, whichever columns the caller asks for, so that every command counts the same runs.
IDENTITY = ["run_id", "status", "config_json", "schema_version"]
SCORES = ("test_labels", "test_scores")
# The columns that hold numbers and flags; every other column but SCORES holds text. A column of nulls fits any.
NUMBERS = ("size", "layer", "seed", "fold", "folds", "epochs", "epochs_done", "best_epoch", "val_acc", "val_auc",
           "test_acc", "test_auc", "test_sens", "test_spec", "params_total", "params_trainable", "train_seconds",
           "images_per_second", "peak_memory_mb", "world_size", "schema_version", "run_flops",
           "run_fraction_of_matmul", "test_balanced_acc", "test_macro_f1", "test_mcc", "test_ece",
           "steps", "eval_points", "val_subset")
FLAGS = ("frozen",)


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _away(path: Path) -> str:
    return f"move it out of {path.parent} (or delete it)"


def read_run(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The one row of a run file (``columns`` of it, all when None), checked against the row schema: a file that
    is not a readable, one-row medboost row with sound values is a ResultsError naming it, the problem and what to
    do. The one place where a single run file is read (``read_runs_at_once`` reads many at once with the same
    checks, and leaves every file it finds fault with to this function)."""
    try:
        with pq.ParquetFile(path) as file:
            names, n_rows = file.schema_arrow.names, file.metadata.num_rows
            version = file.read(columns=["schema_version"]).column(0)[0].as_py() \
                if "schema_version" in names and n_rows else None
            problem = version_problem(version) or columns_problem(path, names, n_rows, file.schema_arrow)
            if problem:
                raise ResultsError(f"{path}: {problem}")
            table = file.read(columns=to_read(columns, names))
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"{path}: not a readable Parquet result ({e}); {_away(path)}, then rerun that run") from None
    problem = rows_problems([path], table)[0]
    if problem:
        raise ResultsError(f"{path}: {problem}")
    return selected(table, columns)


def to_read(columns: list[str] | None, names: list[str]) -> list[str]:
    """What is read of a run file with the columns ``names``: the ``columns`` asked for (all when None) and what
    every row is checked by, in that order."""
    return [c for c in dict.fromkeys(list(columns or COLUMNS) + IDENTITY + list(SCORES)) if c in names]


def version_problem(version: Any) -> str | None:
    """A row schema newer than this medboost reads (``version`` is the row's schema_version, None before it existed)."""
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return f"written by a newer medboost (row schema {version}; this one reads up to {SCHEMA_VERSION}); " \
               f"upgrade medboost to read it"
    return None


def columns_problem(path: Path, names: list[str], n_rows: int, schema: pa.Schema | None = None) -> str | None:
    """What is wrong with a run file's columns (``names``, of types ``schema``) and row count, or None."""
    lacks = [c for c in COLUMNS if c not in names and c not in ADDED_COLUMNS]
    foreign = [c for c in names if c not in COLUMNS]
    if lacks or foreign:
        what = "; ".join(([f"lacks {_names(lacks)}"] if lacks else []) +
                         ([f"has columns medboost never writes: {_names(foreign)}"] if foreign else []))
        return f"not a run row that medboost wrote ({what}); {_away(path)}"
    if n_rows != 1:
        return f"holds {n_rows} rows where a run file holds one; {_away(path)}"
    return types_problem(path, schema) if schema is not None else None


def _fits(name: str, kind: pa.DataType) -> bool:
    if pa.types.is_null(kind) or name in SCORES:  # the scores' types are checked with their values
        return True
    if name in NUMBERS:
        return pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if name in FLAGS:
        return pa.types.is_boolean(kind)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def types_problem(path: Path, schema: pa.Schema) -> str | None:
    """Columns whose type is not the one medboost writes (a number stored as text, say), or None."""
    wrong = [f"{field.name} is {field.type}" for field in schema if field.name in COLUMNS
             and not _fits(field.name, field.type)]
    if not wrong:
        return None
    return f"has columns of the wrong type ({_names(wrong)}; medboost writes numbers, flags and text); {_away(path)}"


def rows_problems(paths: list[Path], table: pa.Table) -> list[str | None]:
    """What is wrong with the values of each row of ``table`` (row i read from ``paths[i]``, whose columns passed
    ``columns_problem``), None where nothing. The run id, status and recipe are checked row by row (a recipe once
    per distinct ``config_json``), the test scores column-wise over all rows (``scores_problems``), so that one
    table of 10,000 rows is checked in well under a second."""
    from ..recipes import saved_recipe  # here, so that importing the results package does not import medmnist

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
    scores = scores_problems(table, run_ids, paths)
    problems: list[str | None] = []
    for path, run_id, status, config_json, scores_problem in zip(paths, run_ids, statuses, configs, scores):
        problem = None
        if not is_run_id(run_id):
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


def scores_problems(table: pa.Table, run_ids: list[Any], paths: list[Path]) -> list[str | None]:
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



def selected(table: pa.Table, columns: list[str] | None) -> pa.Table:
    """The ``columns`` (all when None) of a table read with ``to_read``, in the table's order."""
    return table if columns is None else table.select([c for c in table.column_names if c in columns])

