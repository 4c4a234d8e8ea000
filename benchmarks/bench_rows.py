"""The rows `medboost bench` wrote under a results folder (``bench/BENCH_ID.parquet``, one per case), as a table.

    python benchmarks/bench_rows.py [RESULTS_DIR]     # default: $MEDBOOST_RESULTS, else ./results

Scripts and tests import ``load_bench`` from here (``from bench_rows import load_bench``, this folder on the path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medboost_cli.errors import ResultsError
from medboost_cli.results import ResultsDir

COLUMNS = ["bench_id", "case", "booster", "batch", "train_ms_median", "train_images_per_second",
           "step_fraction_of_matmul", "worker_peak_rss_mb"]


def load_bench(results_dir: Path) -> pd.DataFrame:
    """Every bench row under ``results_dir``, in the order of the files' names (their time stamps)."""
    rows = []
    for path in sorted(ResultsDir(results_dir).bench.glob("*.parquet")):
        try:
            rows += pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise ResultsError(f"{path}: not a readable Parquet bench row ({e}); delete it or bench again") from None
    return pd.DataFrame(rows)


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MEDBOOST_RESULTS", "results"))
    try:
        df = load_bench(folder)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if df.empty:
        print(f"no bench rows under {ResultsDir(folder).bench}")
        return 0
    print(df[[c for c in COLUMNS if c in df]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
