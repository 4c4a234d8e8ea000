"""The ``medboost`` command as users run it: help, one-line errors with non-zero exits, kill -9 and --resume.

Most tests call the command's entry point in-process (``cli.main`` with its argv: the same parsing, error handling
and output as the console script, without a Python start-up and a torch import per call). The console script
itself and the kill -9 test run as real processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medboost_cli import cli

from .conftest import TINY_SETS, write_medmnist

SOURCE_ROOT = Path(cli.__file__).resolve().parents[2]  # the child processes import this medboost_cli (cli/__init__.py)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args) -> Result:
    """``medboost ARGS`` in this process, as the console script runs it (``cli.main``)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["medboost", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


ERROR_LINE = re.compile(r"^(config|data|model file|results) error: \S")


def assert_one_line_error(result, *fragments, code=None):
    """stderr is one line starting with its class ("data error: ..."); the exit code is that class's (errors.py)."""
    assert result.returncode != 0 if code is None else result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert ERROR_LINE.match(lines[0]) and "Traceback" not in result.stderr, lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def table_row(text: str, label: str) -> tuple[str, str]:
    """(ACC, AUC) as printed in the row ``label`` of an ACC/AUC table."""
    found = re.search(rf"\b{label}\W+([0-9.]+)\W+([0-9.]+)", text)
    assert found, (label, text)
    return found.group(1), found.group(2)


def test_console_script_lists_the_commands():
    """The installed ``medboost`` script (else ``python -m medboost_cli.cli``) starts and lists its commands."""
    exe = Path(sys.executable).parent / "medboost"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "medboost_cli.cli"]
    out = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(SOURCE_ROOT)})
    assert out.returncode == 0, out.stderr
    for command in ("download", "train", "evaluate", "ablate"):
        assert command in out.stdout


def test_unknown_task(tmp_path):
    assert_one_line_error(run("train", "brest", "--data-dir", tmp_path), "unknown task 'brest'")


def test_unknown_recipe_key(tmp_path):
    r = run("train", "breast", "--preset", "cpu", "--set", "train.lrr=0.1", "--data-dir", tmp_path)
    assert_one_line_error(r, "unknown key 'train.lrr'", "--set train.lrr=0.1")


def test_corrupt_npz(tmp_path):
    path = write_medmnist(tmp_path, "breast")
    path.write_bytes(path.read_bytes()[:300])
    r = run("train", "breast", "--preset", "cpu", "--set", "data.verify=false", "--data-dir", tmp_path,
            "--results-dir", tmp_path / "r")
    assert_one_line_error(r, str(path), "corrupt or truncated")
    assert not list((tmp_path / "r").glob("runs/*.parquet"))  # nothing half-written


def test_md5_mismatch_and_download_offline(tmp_path):
    """Offline whatever the machine: conftest makes every lookup beyond this machine fail, as with no network."""
    write_medmnist(tmp_path, "breast")
    assert_one_line_error(run("train", "breast", "--preset", "cpu", "--data-dir", tmp_path, "--results-dir",
                              tmp_path / "results"), "breastmnist.npz: MD5", "download")
    offline = run("download", "pneumonia", "--data-dir", tmp_path / "new")
    assert_one_line_error(offline, "could not download pneumoniamnist.npz",
                          "https://zenodo.org/records/10519652/files/pneumoniamnist.npz",
                          f"put it at {tmp_path / 'new' / 'pneumoniamnist.npz'}")
    assert list((tmp_path / "new").iterdir()) == []  # no partial file left behind


def test_train_then_evaluate_through_the_cli(tmp_path):
    write_medmnist(tmp_path / "d", "breast")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    r = run("train", "breast", "--booster", "hybrid", "--preset", "cpu", *sets, "--data-dir", tmp_path / "d",
            "--results-dir", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    (row,) = list((tmp_path / "r" / "runs").glob("*.parquet"))
    recorded = pd.read_parquet(row).iloc[0]
    assert recorded.booster == "hybrid" and str(row) in r.stdout
    assert f"{row.stem}: best epoch {recorded.best_epoch + 1} of 2 by val auc" in r.stdout
    assert table_row(r.stdout, "test") == (f"{recorded.test_acc:.4f}", f"{recorded.test_auc:.4f}")
    e = run("evaluate", row.stem, "--split", "val", "--data-dir", tmp_path / "d", "--results-dir", tmp_path / "r")
    assert e.returncode == 0, e.stderr
    assert table_row(e.stdout, "now") == table_row(e.stdout, "recorded") == (
        f"{recorded.val_acc:.4f}", f"{recorded.val_auc:.4f}")
    forced = run("train", "breast", "--booster", "hybrid", "--preset", "cpu", *sets, "--data-dir", tmp_path / "d",
                 "--results-dir", tmp_path / "r", "--force", "--json", "--quiet")
    assert forced.returncode == 0, forced.stderr
    printed = json.loads(forced.stdout)  # the final row, nothing else on stdout
    assert printed["run_id"] == row.stem and printed["test_auc"] == pytest.approx(recorded.test_auc)
    assert "test_scores" not in printed and printed["status"] == "completed"


# The child of the kill -9 test: `medboost train ...` whose checkpoint writer, when it writes the second epoch's
# last.pt, writes half of the bytes and then SIGKILLs its own process: a kill at the worst moment, at the same
# point on every machine, however loaded (no polling, no timing).
KILL_DURING_SECOND_LAST_PT = """
import io, os, signal, sys
import torch
real_save, seen = torch.save, []
def save(obj, f, *args, **kwargs):
    if "last.pt" in os.path.basename(str(getattr(f, "name", f))):  # the temporary file's name, or its path
        seen.append(f)
        if len(seen) == 2:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from medboost_cli.cli import main
sys.argv = ["medboost"] + sys.argv[1:]
main()
"""


def test_sigkill_while_writing_a_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    """What only a real kill shows (test_engine's resume test covers the resumed arithmetic in-process, after a
    clean KeyboardInterrupt): no handler runs, so the row stays 'running', a checkpoint half-written at the moment
    of the kill must not replace the previous one, and --resume then completes with the uninterrupted run's
    metrics."""
    write_medmnist(tmp_path / "d", "breast")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    common = ["train", "breast", "--preset", "cpu", *sets, "--data-dir", tmp_path / "d", "--quiet"]
    cut = tmp_path / "cut"
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SECOND_LAST_PT, *map(str, common),
                             "--results-dir", str(cut)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (row_file,) = list((cut / "runs").glob("*.parquet"))
    assert pd.read_parquet(row_file).iloc[0].status == "running"  # no except/finally ran
    (last,) = list(cut.glob("checkpoints/*/last.pt"))
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the previous checkpoint, whole
    (best,) = list(cut.glob("checkpoints/*/best.pt"))
    assert torch.load(best, weights_only=True)["epoch"] in (0, 1)  # readable, whichever epoch was best
    assert list(last.parent.glob(".last.pt.*.tmp"))  # the half-written checkpoint the kill left

    resumed = run(*common, "--results-dir", cut, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(cut.rglob("*.tmp"))  # cleaned when the run started again
    assert "resuming" in resumed.stderr and "after epoch 1 of 2" in resumed.stderr
    full = run(*common, "--results-dir", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    a = pd.read_parquet(next((tmp_path / "full" / "runs").glob("*.parquet"))).iloc[0]
    b = pd.read_parquet(row_file).iloc[0]
    assert b.status == "completed" and b.epochs_done == 2
    assert (a.test_auc, a.test_acc, a.best_epoch, a.val_auc) == (b.test_auc, b.test_acc, b.best_epoch, b.val_auc)
    assert np.array_equal(np.stack(a.test_scores), np.stack(b.test_scores))


def test_python_dash_m_and_version_share_one_version_source():
    """``python -m medboost_cli --version`` runs the same CLI; the version is the package's, the one the
    installed distribution reports (pyproject reads it from medboost_cli.__version__)."""
    from importlib import metadata

    import medboost_cli

    out = subprocess.run([sys.executable, "-m", "medboost_cli", "--version"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"medboost {medboost_cli.__version__}"
    assert metadata.version("medboost") == medboost_cli.__version__


def test_an_interrupted_run_exits_with_one_line_saying_how_to_resume(monkeypatch, tmp_path):
    from medboost_cli import engine
    from medboost_cli.errors import Interrupted

    def preempted(*args, **kwargs):
        raise Interrupted("SIGTERM")

    monkeypatch.setattr(engine, "train", preempted)
    result = run("train", "breast", "--preset", "cpu", "--results-dir", tmp_path, "--quiet")
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 143 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "interrupted by SIGTERM" in lines[0] and "--resume" in lines[0]


def test_first_class_options_map_onto_the_recipe_keys(tmp_path, monkeypatch):
    """--epochs/--lr/--batch-size/--llm/--layer set the same keys as --set, with the option named in errors."""
    from medboost_cli import engine

    seen = {}

    def fake_train(recipe, *args, **kwargs):
        seen["recipe"] = recipe
        raise SystemExit(0)

    monkeypatch.setattr(engine, "train", fake_train)
    result = run("train", "breast", "--preset", "cpu", "--epochs", "7", "--lr", "2e-4", "--batch-size", "16",
                 "--llm", "minilm", "--layer", "-2", "--results-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    r = seen["recipe"]
    assert (r.train.epochs, r.train.lr, r.train.batch_size, r.booster.llm, r.booster.layer) == (7, 2e-4, 16, "minilm", -2)
    assert_one_line_error(run("train", "breast", "--preset", "cpu", "--lr", "-1", "--results-dir", tmp_path),
                          "--lr -1", "train.lr")
    dry = run("ablate", "residual", "--tasks", "adrenal3d", "--preset", "cpu", "--seeds", "1", "--epochs", "3",
              "--dry-run", "--results-dir", tmp_path)
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if "medboost train" in line]
    assert len(commands) == 4 and all("--set train.epochs=3" in c for c in commands)


def test_runs_lists_the_results_as_a_table_or_json(tmp_path):
    import json

    from medboost_cli.results import new_row, write_row

    for seed, status in ((0, "completed"), (1, "interrupted")):
        write_row(tmp_path, new_row(run_id=f"breast-vit-mini-rllm-0000aaaa-s{seed}", status=status, task="breast",
                                    seed=seed, test_auc=0.8125 if status == "completed" else None))
    write_row(tmp_path, new_row(run_id="adrenal3d-vit3d-none-0000bbbb-s0", status="completed", task="adrenal3d",
                                seed=0, test_auc=0.75))
    listed = run("runs", "--results-dir", tmp_path, "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert sorted(r["run_id"] for r in records) == ["adrenal3d-vit3d-none-0000bbbb-s0",
                                                    "breast-vit-mini-rllm-0000aaaa-s0",
                                                    "breast-vit-mini-rllm-0000aaaa-s1"]
    only = json.loads(run("runs", "--results-dir", tmp_path, "--json", "--task", "breast", "--status",
                          "completed").stdout)
    assert [(r["run_id"], r["test_auc"]) for r in only] == [("breast-vit-mini-rllm-0000aaaa-s0", 0.8125)]
    table = run("runs", "--results-dir", tmp_path).stdout
    assert "3 runs" in table and "0.8125" in table and "interrupted" in table


def test_runs_json_shows_the_manifest_and_the_panel_as_objects(tmp_path):
    import json

    from medboost_cli.results import new_row, run_manifest, write_row

    manifest = run_manifest(None, "cpu", None, None)
    write_row(tmp_path, new_row(run_id="breast-vit-mini-rllm-0000aaaa-s0", status="completed", task="breast", seed=0,
                                manifest_json=manifest, test_panel_json=json.dumps({"mcc": 0.5}), test_mcc=0.5))
    write_row(tmp_path, new_row(run_id="breast-vit-mini-rllm-0000aaaa-s1", status="completed", task="breast", seed=1))
    listed = run("runs", "--results-dir", tmp_path, "--json")
    assert listed.returncode == 0, listed.stderr
    new, old = json.loads(listed.stdout)
    assert new["manifest"] == json.loads(manifest) and new["manifest"]["machine"]["device"] == "cpu"
    assert new["test_panel"] == {"mcc": 0.5} and new["test_mcc"] == 0.5 and "manifest_json" not in new
    assert old["manifest"] is None and old["test_panel"] is None  # a row without them


def test_bench_refuses_zero_timed_steps(tmp_path):
    result = run("bench", "breast", "--preset", "cpu", "--steps", "0", "--results-dir", tmp_path)
    assert result.returncode == 2 and "--steps" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_refuses_what_is_not_a_run_id(tmp_path):
    (tmp_path / "runs").mkdir()
    for bad in ("", "*", "../../etc/passwd"):
        assert_one_line_error(run("evaluate", bad, "--results-dir", tmp_path), "is not a run id")
