"""Results: one Parquet file per run (``RESULTS/runs/RUN_ID.parquet``, one row), written atomically.

A run's row is written when it starts (status ``running``), replaced when it ends (``completed``,
``failed`` or ``interrupted``). ``load_results`` gathers every row into one DataFrame. Per-sample test
scores and labels are kept in the row so that statistics (paired bootstrap) need nothing but the results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import MedboostError
from .fileio import atomic_write

# Columns every row has, in order (the list, plus the scores used by the statistics).
COLUMNS = [
    "run_id", "status", "task", "flag", "size", "backbone", "booster", "llm", "layer", "frozen", "llm_init",
    "seed", "epochs", "epochs_done", "best_epoch", "select_metric", "val_acc", "val_auc", "test_acc", "test_auc",
    "params_total", "params_trainable", "train_seconds", "images_per_second", "peak_memory_mb", "memory_kind",
    "device", "precision", "frozen_sha256", "config_hash", "config_json", "history_json", "versions_json",
    "git_commit", "started_at", "ended_at", "error", "test_labels", "test_scores",
]
HEAVY_COLUMNS = ("test_labels", "test_scores", "history_json", "config_json")


def cell_id(run_id: str) -> str:
    """A run id without its seed suffix: the same for every seed of one configuration (one report cell)."""
    return run_id.rsplit("-s", 1)[0]


def runs_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "runs"


def row_path(results_dir: Path, run_id: str) -> Path:
    return runs_dir(results_dir) / f"{run_id}.parquet"


def write_row(results_dir: Path, row: dict[str, Any]) -> Path:
    """Write (or replace) a run's row: to a temporary file in the same folder, then an atomic rename."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row lacks columns {missing}")
    table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS}])
    return atomic_write(row_path(results_dir, row["run_id"]), lambda tmp: pq.write_table(table, tmp))


def load_results(results_dir: Path, columns: list[str] | None = None, status: str | None = None) -> pd.DataFrame:
    """All runs under ``results_dir`` as one DataFrame (empty, with the standard columns, when there are none)."""
    files = sorted(runs_dir(results_dir).glob("*.parquet")) if runs_dir(results_dir).is_dir() else []
    cols = list(columns or COLUMNS)
    if status is not None and "status" not in cols:
        cols.append("status")
    frames = []
    for f in files:
        try:
            frames.append(pq.read_table(f, columns=[c for c in cols if c in pq.read_schema(f).names]).to_pandas())
        except (pa.ArrowInvalid, OSError) as e:
            raise MedboostError(f"{f}: not a readable Parquet result ({e}); delete it or rerun that run") from None
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    if status is not None:
        df = df[df["status"] == status].reset_index(drop=True)
    return df


def find_run(results_dir: Path, run: str) -> dict[str, Any]:
    """A run's row by id, unique id prefix, or the path of its Parquet file."""
    path = Path(run)
    if path.suffix == ".parquet" and path.is_file():
        return pq.read_table(path).to_pylist()[0]
    exact = row_path(results_dir, run)
    if exact.is_file():
        return pq.read_table(exact).to_pylist()[0]
    matches = sorted(runs_dir(results_dir).glob(f"{run}*.parquet")) if runs_dir(results_dir).is_dir() else []
    if len(matches) == 1:
        return pq.read_table(matches[0]).to_pylist()[0]
    if not matches:
        raise MedboostError(f"no run '{run}' under {runs_dir(results_dir)}; list runs with `ls {runs_dir(results_dir)}`")
    names = ", ".join(m.stem for m in matches[:5])
    raise MedboostError(f"run '{run}' is ambiguous under {runs_dir(results_dir)}: {names}{' ...' if len(matches) > 5 else ''}")


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
