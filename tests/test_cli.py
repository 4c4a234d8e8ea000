"""The ``medboost`` command as users run it: help, one-line errors with non-zero exits, kill -9 and --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from .conftest import TINY_SETS, write_medmnist

MEDBOOST = [sys.executable, "-m", "medboost_cli.cli"]


def run(*args, env=None, timeout=300):
    return subprocess.run(MEDBOOST + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("download", "train", "evaluate"):
        assert command in out.stdout


def test_unknown_task(tmp_path):
    assert_one_line_error(run("train", "brest", "--data-dir", str(tmp_path)), "unknown task 'brest'")


def test_unknown_recipe_key(tmp_path):
    r = run("train", "breast", "--preset", "cpu", "--set", "train.lrr=0.1", "--data-dir", str(tmp_path))
    assert_one_line_error(r, "unknown key 'train.lrr'", "--set train.lrr=0.1")


def test_corrupt_npz(tmp_path):
    path = write_medmnist(tmp_path, "breast")
    path.write_bytes(path.read_bytes()[:300])
    r = run("train", "breast", "--preset", "cpu", "--set", "data.verify=false", "--data-dir", str(tmp_path),
            "--results-dir", str(tmp_path / "r"))
    assert_one_line_error(r, str(path), "corrupt or truncated")
    assert not list((tmp_path / "r").glob("runs/*.parquet"))  # nothing half-written


def test_md5_mismatch_and_download_offline(tmp_path):
    write_medmnist(tmp_path, "breast")
    assert_one_line_error(run("train", "breast", "--preset", "cpu", "--data-dir", str(tmp_path)),
                          "breastmnist.npz: MD5", "download")
    offline = run("download", "pneumonia", "--data-dir", str(tmp_path / "new"))
    assert_one_line_error(offline, "pneumoniamnist.npz", "https://zenodo.org/", str(tmp_path / "new"))


def test_train_then_evaluate_through_the_cli(tmp_path):
    write_medmnist(tmp_path / "d", "breast")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    r = run("train", "breast", "--booster", "hybrid", "--preset", "cpu", *sets, "--data-dir", str(tmp_path / "d"),
            "--results-dir", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert "test" in r.stdout and "hybrid" in r.stdout
    (row,) = list((tmp_path / "r" / "runs").glob("*.parquet"))
    e = run("evaluate", row.stem, "--split", "val", "--data-dir", str(tmp_path / "d"), "--results-dir",
            str(tmp_path / "r"))
    assert e.returncode == 0, e.stderr
    recorded = pd.read_parquet(row).iloc[0]
    assert f"{recorded.val_auc:.4f}" in e.stdout.split("recorded")[0]  # "now" row equals the recorded one


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """The issue's check: kill -9 half way, rerun with --resume, get the same final test metrics."""
    write_medmnist(tmp_path / "d", "breast", n=(384, 32, 48))
    sets = [a for s in TINY_SETS + ["train.epochs=8", "train.warmup_epochs=1"] for a in ("--set", s)]
    common = ["train", "breast", "--preset", "cpu", *sets, "--data-dir", str(tmp_path / "d"), "--quiet"]

    full = run(*common, "--results-dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    cut = tmp_path / "cut"
    proc = subprocess.Popen(MEDBOOST + common + ["--results-dir", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(cut.glob("checkpoints/*/last.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (row_file,) = list((cut / "runs").glob("*.parquet"))
    if pd.read_parquet(row_file).iloc[0].status != "running":
        pytest.skip("the run finished before it could be killed")
    resumed = run(*common, "--results-dir", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    a, b = pd.read_parquet(next((tmp_path / "full" / "runs").glob("*.parquet"))).iloc[0], pd.read_parquet(row_file).iloc[0]
    assert b.status == "completed"
    assert (a.test_auc, a.test_acc, a.best_epoch) == (b.test_auc, b.test_acc, b.best_epoch)


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "medboost"
    if not exe.exists():
        pytest.skip("medboost console script not installed in this environment")
    assert subprocess.run([str(exe), "--help"], capture_output=True, text=True).returncode == 0
