"""Results: the one owner of run ids, the results folder's layout, the row's columns and their reading/writing.

A results folder (``--results-dir``, else ``$MEDBOOST_RESULTS``, else ``./results``) holds::

    runs/RUN_ID.parquet            one row per run (``COLUMNS``), replaced atomically as the run progresses
    checkpoints/RUN_ID/last.pt     the last finished epoch's training state (deleted once the run completes)
    checkpoints/RUN_ID/best.pt     the weights of the best validation epoch
    bench/BENCH_ID.parquet         one row per ``medboost bench`` case

A run id is ``TASK-BACKBONE-BOOSTER-CONFIGHASH-sSEED`` (``make_run_id``): the configuration hash covers
everything that defines the experiment except the seed, so the id without its seed (``cell_id``) names one
configuration, which is one cell of a report. One file per run makes concurrent writers safe: a row is
written when the run starts (status ``running``) and replaced when it ends (``completed``, ``failed`` or
``interrupted``). Per-sample test scores and labels are kept in the row, so statistics need nothing else.

Rows carry ``schema_version``; rows written before it existed (version 1) are read with the columns they
lack filled in (``_upgrade``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ConfigError, ResultsError
from .fileio import atomic_write

SCHEMA_VERSION = 2  # 2: added schema_version and lm_norm

# Columns every row has, in order.
COLUMNS = [
    "run_id", "status", "task", "flag", "size", "backbone", "booster", "llm", "layer", "frozen", "llm_init",
    "lm_norm", "seed", "epochs", "epochs_done", "best_epoch", "select_metric", "val_acc", "val_auc", "test_acc",
    "test_auc", "params_total", "params_trainable", "train_seconds", "images_per_second", "peak_memory_mb",
    "memory_kind", "device", "world_size", "devices", "precision", "frozen_sha256", "config_hash", "config_json", "history_json",
    "versions_json", "git_commit", "started_at", "ended_at", "error", "test_labels", "test_scores",
    "schema_version",
]
# Columns added after schema 1 and what they state for rows written before them: those runs had no final norm
# after F_L (lm_norm "none") wherever they had an F_L at all.
ADDED_AFTER_V1 = ("lm_norm", "schema_version")
_WITH_LM = ("rllm", "out", "hybrid")


# Columns added within schema 2, and what they state for rows written before them: one process, on ``device``.
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

    def stale_writes(self, run_id: str) -> list[Path]:
        """Temporary files that killed writes of ``run_id`` left behind (``fileio.atomic_write`` names them
        ``.NAME.*.tmp``); only this run's, so that other runs writing into the folder are never touched."""
        row, ckpt = self.row(run_id), self.checkpoints(run_id)
        found = list(row.parent.glob(f".{row.name}.*.tmp")) if row.parent.is_dir() else []
        return found + (list(ckpt.glob(".*.tmp")) if ckpt.is_dir() else [])


# ------------------------------------------------------------------------------------------------ rows


def new_row(**values: Any) -> dict[str, Any]:
    """A row with every column, ``None`` where ``values`` says nothing; an unknown column is a bug."""
    unknown = sorted(set(values) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown result column(s) {unknown}")
    return {c: values.get(c) for c in COLUMNS} | {"schema_version": SCHEMA_VERSION}


def write_row(results_dir: Path, row: dict[str, Any]) -> Path:
    """Write (or replace) a run's row: to a temporary file in the same folder, then an atomic rename."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row lacks columns {missing}")
    table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS}])
    return atomic_write(ResultsDir(results_dir).row(row["run_id"]), lambda tmp: pq.write_table(table, tmp))


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in columns if c in names] if columns else None)
    except (pa.ArrowInvalid, OSError) as e:
        raise ResultsError(f"{path}: not a readable Parquet result ({e}); delete it or rerun that run") from None


def _upgrade(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A row of any schema version as one with ``columns``: what an older row lacks is filled in."""
    if row.get("schema_version") is None:
        row = row | {c: _old_value(c, row) for c in ADDED_AFTER_V1}
    row = row | {c: _old_value(c, row) for c in ADDED_IN_V2 if row.get(c) is None}
    return {c: row.get(c) for c in columns}


def load_results(results_dir: Path, columns: list[str] | None = None, status: str | None = None) -> pd.DataFrame:
    """All runs under ``results_dir`` as one DataFrame (empty, with the standard columns, when there are none)."""
    runs = ResultsDir(results_dir).runs
    files = sorted(runs.glob("*.parquet")) if runs.is_dir() else []
    cols = list(columns or COLUMNS)
    if status is not None and "status" not in cols:
        cols.append("status")
    needed = list(dict.fromkeys(cols + ["schema_version", "booster", "device"]))  # what an upgrade may consult
    frames = [_read_table(f, needed).to_pandas() for f in files]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=needed)
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
    return _upgrade(_read_table(path).to_pylist()[0], COLUMNS)


def read_row(results_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The row of ``run_id``, or None when the run has none."""
    path = ResultsDir(results_dir).row(run_id)
    return _row_of(path) if path.is_file() else None


def find_run(results_dir: Path, run: str) -> dict[str, Any]:
    """A run's row by id, unique id prefix, or the path of its Parquet file."""
    path = Path(run)
    if path.suffix == ".parquet" and path.is_file():
        return _row_of(path)
    layout = ResultsDir(results_dir)
    check_run_id(run)
    exact = layout.row(run)
    if exact.is_file():
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
