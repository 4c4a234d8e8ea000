"""How long ``load_results`` takes on a results folder of 10,000 runs (prints the figures; nothing asserted).

A study over many tasks, seeds and configurations trained on a cluster leaves one Parquet file per run in
``runs/``, written by many hosts; ``medboost report`` and ``medboost runs`` read them all. The rows fabricated
here are shaped like real ones (``results.new_row``, written with ``results.write_row``): every column, the
recipe and a 40-epoch history as JSON, and per-sample test labels and scores (BreastMNIST's 156 test images by
default). One row in ten is a baseline without an LM (null LM columns) and one in twenty is still running (null
test metrics), so the reader has to unify files whose column types differ.

Every file here is sound, so ``load_results`` takes its bulk route (``results._read_runs_at_once``: each file
opened and read once, the checks run over the joined table). A folder with any unsound file is read file by file
instead (``results._read_run``), about twice as slow, so that each bad file is named. A folder kept from before
``write_row`` dropped column statistics and dictionary pages holds the bigger old files, which read 10-15% slower.

    python benchmarks/load_10k_runs.py                       # 10,000 runs in a temporary folder
    python benchmarks/load_10k_runs.py --folder /tmp/r10k    # keep the folder; a second call reuses it
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from medboost_cli.results import ResultsDir, load_results, new_row, write_row


def fabricate(folder: Path, n: int, n_test: int = 156, seed: int = 0) -> None:
    """Write ``n`` synthetic rows (skipping those already there)."""
    rng = np.random.default_rng(seed)
    have = {p.stem for p in ResultsDir(folder).runs.glob("*.parquet")} if ResultsDir(folder).runs.is_dir() else set()
    history = json.dumps([{"epoch": e, "train_loss": 0.5, "val_auc": 0.8, "seconds": 1.0} for e in range(40)])
    config = json.dumps({"task": "breastmnist", "train": {"epochs": 40, "lr": 5e-4}, "booster": {"mode": "rllm"}})
    for i in range(n):
        run_id = f"breast-vit-mini-{'none' if i % 10 == 0 else 'rllm'}-{i // 10:08x}-s{i % 10}"
        if run_id in have:
            continue
        running = i % 20 == 7
        labels = rng.integers(0, 2, size=(n_test, 1))
        scores = rng.dirichlet([1, 1], size=n_test).astype(np.float32)
        row = new_row(
            run_id=run_id, status="running" if running else "completed", task="breast", flag="breastmnist", size=28,
            backbone="vit-mini", booster="none" if i % 10 == 0 else "rllm",
            llm=None if i % 10 == 0 else "minilm", layer=None if i % 10 == 0 else 5, frozen=True,
            llm_init="pretrained", lm_norm=None if i % 10 == 0 else "none", seed=i % 10, epochs=40, epochs_done=40,
            best_epoch=int(rng.integers(0, 40)), select_metric="auc", val_acc=float(rng.random()),
            val_auc=float(rng.random()), test_acc=None if running else float(rng.random()),
            test_auc=None if running else float(rng.random()), params_total=2_000_000, params_trainable=1_800_000,
            train_seconds=float(rng.random() * 100), images_per_second=300.0, peak_memory_mb=900.0,
            memory_kind="process_rss", device="cpu", precision="fp32", frozen_sha256="0" * 64, config_hash="abcd1234",
            config_json=config, history_json=history, versions_json="{}", git_commit=None,
            started_at="2025-01-01T00:00:00+00:00", ended_at=None if running else "2025-01-01T01:00:00+00:00",
            test_labels=None if running else labels.tolist(), test_scores=None if running else scores.tolist(),
        )
        write_row(folder, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, help="results folder to fill (and reuse); default: a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        start = time.perf_counter()
        fabricate(folder, args.runs)
        print(f"fabricated {args.runs} runs in {folder} ({time.perf_counter() - start:.1f} s)")
        for what, columns in (("all columns", None), ("the `runs` columns", ["run_id", "status", "test_auc"])):
            start = time.perf_counter()
            df = load_results(folder, columns=columns)
            seconds = time.perf_counter() - start
            print(f"load_results, {what}: {len(df)} rows in {seconds:.2f} s ({1e3 * seconds / len(df):.2f} ms/run)")


if __name__ == "__main__":
    main()
