"""The Python half of benchmarks/gpu_check.sh: a stand-in BreastMNIST file where the real one is absent, and the
check's figures as records in the layout of benchmarks/records.yaml (one YAML file, to be merged by hand).

    python benchmarks/gpu_records.py fake-data DIR [--n 546 78 156]
    python benchmarks/gpu_records.py records RESULTS OUT.yaml --tests LOG --bench-command CMD --run-command CMD

A record names the machine by a key made from the device's name (``nvidia-h100-80gb-hbm3``); the file's
``machines`` says what that machine is (device, torch, CUDA), as records.yaml's ``machines`` does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

TABLE = "gpu-check"  # records.yaml's table for these figures
BREAST_SPLITS = (546, 78, 156)  # BreastMNIST's train, val and test sizes


def fake_data(folder: Path, n: tuple[int, int, int] = BREAST_SPLITS, size: int = 28) -> Path:
    """A file in BreastMNIST's layout and split sizes, random images with labels learnable from their brightness:
    the shapes and so the cost of the real file, not its metrics."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = rng.integers(0, 2, size=(count, 1))
        images = rng.integers(0, 90, size=(count, size, size)) + 120 * labels[:, :, None]
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("breastmnist.npz" if size == 28 else f"breastmnist_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


def machine_key(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")


def _read(folder: Path) -> list[dict]:
    return [pd.read_parquet(p).iloc[0].to_dict() for p in sorted(folder.glob("*.parquet"))]


def _peak(row: dict) -> str:
    if row.get("peak_cuda_allocated_mb") is not None:
        return f"peak {row['peak_cuda_allocated_mb']:.0f} MB allocated on the card"
    return f"peak RSS {row['worker_peak_rss_mb']:.0f} MB"


def bench_records(rows: list[dict], command: str, base: dict) -> list[dict]:
    out = []
    for r in rows:
        layer = f"; F_L at {100 * r['layer_fraction_of_matmul']:.0f}%" if r.get("layer_fraction_of_matmul") else ""
        out.append(base | {
            "command": command,
            "what": f"{r['case']} booster={r['booster']}, batch {r['batch']}, {r['precision']}: train step, MFU "
                    f"against the {r['matmul_dtype']} matmul measured on the card",
            "figure": f"{r['train_ms_median']:.1f} ms/step ({r['train_images_per_second']:.0f} img/s), "
                      f"{r['step_tflops']:.1f} TFLOP/s = {100 * r['step_fraction_of_matmul']:.0f}% of "
                      f"{r['matmul_tflops']:.1f} TFLOP/s{layer}; {_peak(r)}"})
    return out


def run_record(row: dict, command: str, base: dict) -> dict:
    figures = json.loads(row["run_cost_json"])
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in figures["seconds"].items())
    return base | {
        "command": command,
        "what": f"BreastMNIST, {row['backbone']} + {row['llm']}, {row['epochs_done']} epoch(s), random weights: "
                f"run-level efficiency and wall time by part",
        "figure": f"{100 * row['run_fraction_of_matmul']:.1f}% of {figures['matmul_tflops']:.1f} TFLOP/s "
                  f"({figures['matmul_dtype']}); {figures['wall_seconds']:.1f} s: {parts}; test AUC "
                  f"{row['test_auc']:.3f}"}


def records(results: Path, out: Path, tests_log: Path, bench_command: str, run_command: str) -> dict:
    import torch

    bench, runs = _read(results / "bench"), _read(results / "runs")
    device = (bench or runs)[0]["device"]
    key = machine_key(device)
    cuda = f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""
    base = {"table": TABLE, "date": dt.date.today().isoformat(), "machine": key}
    counted = re.compile(r"\d+ (passed|failed|errors?|tests? collected)")
    summary = [line for line in tests_log.read_text().splitlines() if counted.search(line)]
    data = {"machines": {key: f"{device}, torch {torch.__version__}{cuda}"}, "records": [
        base | {"command": "pytest -m gpu", "what": "the tests of the CUDA paths",
                "figure": summary[-1].strip("= ") if summary else "no summary line"},
        *bench_records(bench, bench_command, base), *(run_record(r, run_command, base) for r in runs)]}
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    fake = sub.add_parser("fake-data")
    fake.add_argument("folder", type=Path)
    fake.add_argument("--n", type=int, nargs=3, default=BREAST_SPLITS)
    rec = sub.add_parser("records")
    rec.add_argument("results", type=Path)
    rec.add_argument("out", type=Path)
    rec.add_argument("--tests", type=Path, required=True)
    rec.add_argument("--bench-command", required=True)
    rec.add_argument("--run-command", required=True)
    args = ap.parse_args(argv)
    if args.what == "fake-data":
        print(fake_data(args.folder, tuple(args.n)))
    else:
        data = records(args.results, args.out, args.tests, args.bench_command, args.run_command)
        print(yaml.safe_dump(data["records"], sort_keys=False, allow_unicode=True, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
