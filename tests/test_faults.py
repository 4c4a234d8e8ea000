"""A finished result is never lost: a retraining (``--force``) stopped at any moment (an exception, Ctrl-C,
SIGTERM, SIGKILL, a full disk, a divergence) leaves the completed row and its best checkpoint as they were, and
``--force --resume`` continues the retraining. The disk and folder faults are in test_full_disk.py, damaged
checkpoints, diverging runs and the one writer in test_bad_checkpoints.py."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from medboost_cli import attempts
from medboost_cli.results import ResultsDir, load_results, read_row

from .fault_fixtures import assert_result_kept, completed, folder, snapshot, train_args  # noqa: F401 (fixtures)
from .test_cli import SOURCE_ROOT, run


# ------------------------------------------------------------------------------ --force stopped at any moment


def _disk_full_in_save(monkeypatch):
    real = torch.save

    def save(obj, f, *args, **kwargs):  # half of a checkpoint reaches the disk, then it is full
        real({"format": 1}, f)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)


def _stop_after_first_epoch(monkeypatch):
    from medboost_cli import engine
    from medboost_cli.errors import Interrupted

    real = engine.Run.save

    def save(self, improved):
        real(self, improved)
        raise Interrupted("SIGTERM")

    monkeypatch.setattr(engine.Run, "save", save)


def _ctrl_c_in_the_test_pass(monkeypatch):
    from medboost_cli import engine

    def finalize(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Run, "finalize", finalize)


def _disk_full_for_the_completed_row(monkeypatch):
    real = attempts.write_row

    def write_row(root, row, path=None):
        if row["status"] == "completed":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(root, row, path)

    monkeypatch.setattr(attempts, "write_row", write_row)


def _diverges(monkeypatch):
    from medboost_cli import engine

    real = engine.Run.train_epoch
    monkeypatch.setattr(engine.Run, "train_epoch", lambda self, e, r: real(self, e, r) | {"train_loss": float("nan")})


FORCE_FAULTS = {  # id -> (inject, exit code, what the line says)
    "sigterm-after-the-first-epoch": (_stop_after_first_epoch, 143, "interrupted by SIGTERM"),
    "disk-full-during-checkpoint-save": (_disk_full_in_save, 5, "the disk is full"),
    "ctrl-c-in-the-test-pass": (_ctrl_c_in_the_test_pass, 130, "interrupted by Ctrl-C"),
    "disk-full-for-the-completed-row": (_disk_full_for_the_completed_row, 5, "the disk is full"),
    "diverges": (_diverges, 2, "diverged at epoch 1 of 2"),
}


@pytest.mark.parametrize("name", list(FORCE_FAULTS))
def test_a_forced_retraining_stopped_at_any_point_keeps_the_completed_result(name, folder, monkeypatch):
    data, results, run_id = folder
    inject, code, fragment = FORCE_FAULTS[name]
    before = snapshot(results)
    with monkeypatch.context() as patched:
        inject(patched)
        stopped = run(*train_args(data, results, "--force"))
    lines = stopped.stderr.strip().splitlines()
    assert stopped.returncode == code and len(lines) == 1 and fragment in lines[0], stopped.stderr
    assert "Traceback" not in stopped.stderr and "a bug in medboost" not in stopped.stderr
    assert_result_kept(results, run_id, before)
    again = run(*train_args(data, results, "--force", "--resume", "--json"))  # continues the retraining
    assert again.returncode == 0, again.stderr
    assert read_row(results, run_id)["test_scores"] == read_row(completed_copy(before, results), run_id)["test_scores"]
    assert not ResultsDir(results).pending_row(run_id).exists() and not ResultsDir(results).last(run_id).exists()


def completed_copy(files: dict[str, bytes], results: Path) -> Path:
    """The folder ``files`` were taken from, written again beside ``results``."""
    copy = results.parent / "before"
    for name, data in files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    return copy


def test_a_retraining_killed_between_its_renames_is_finished_by_the_next_train(folder, monkeypatch):
    """best.pt is replaced, then the kill: the completed row still reads as completed, and the next train of the
    run finishes the swap (the commit record in checkpoints/RUN_ID/row.pending.parquet) before anything else."""
    data, results, run_id = folder
    before = snapshot(results)
    real = os.replace

    def replace(src, dst):
        if str(src).endswith("row.pending.parquet"):  # the row's rename, after best.pt's
            raise KeyboardInterrupt
        return real(src, dst)

    with monkeypatch.context() as patched:
        patched.setattr(attempts.os, "replace", replace)
        stopped = run(*train_args(data, results, "--force"))
    assert stopped.returncode == 130, stopped.stderr
    layout = ResultsDir(results)
    assert layout.row(run_id).read_bytes() == before[str(layout.row(run_id).relative_to(results))]
    assert read_row(results, run_id)["status"] == "completed" and layout.pending_row(run_id).exists()
    assert not layout.pending_best(run_id).exists()  # best.pt is the retrained one already
    logs = run(*train_args(data, results, "--resume"))
    assert logs.returncode == 0 and "finished replacing the completed result" in logs.stdout + logs.stderr
    assert not layout.pending_row(run_id).exists() and not layout.pending_best(run_id).exists()
    assert read_row(results, run_id)["started_at"] >= pd.read_parquet(
        completed_copy(before, results) / "runs" / f"{run_id}.parquet").iloc[0].started_at


# A child `medboost train --force` that SIGKILLs itself at a point named by its first argument: while writing a
# checkpoint (half of it on disk), after the first epoch's checkpoints, or between the renames of its completion.
KILL_AT = """
import os, signal, sys
import torch
point, real_save, real_replace, saves = sys.argv[1], torch.save, os.replace, []
def save(obj, f, *args, **kwargs):
    saves.append(getattr(f, "name", f))
    if point == "mid-checkpoint" and len(saves) == 2:
        real_save({"format": 1}, f)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "after-first-epoch" and len(saves) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
def replace(src, dst):
    if point == "between-renames" and str(dst).endswith(".parquet") and "pending" in str(src):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
torch.save = save
from medboost_cli import attempts
attempts.os = type("os", (), {"replace": staticmethod(replace)})
from medboost_cli.cli import main
sys.argv = ["medboost"] + sys.argv[2:]
main()
"""


@pytest.mark.parametrize("point", ["mid-checkpoint", "after-first-epoch", "between-renames"])
def test_sigkill_during_a_forced_retraining_keeps_the_completed_result(point, folder):
    data, results, run_id = folder
    before = snapshot(results)
    killed = subprocess.run([sys.executable, "-c", KILL_AT, point, *map(str, train_args(data, results, "--force"))],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    layout = ResultsDir(results)
    assert layout.row(run_id).read_bytes() == before[str(layout.row(run_id).relative_to(results))]
    assert list(load_results(results)["status"]) == ["completed"]
    if point != "between-renames":
        assert layout.best(run_id).read_bytes() == before[str(layout.best(run_id).relative_to(results))]
    resumed = run(*train_args(data, results, "--force", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert read_row(results, run_id)["status"] == "completed" and not list(results.rglob("*.tmp"))
    assert not layout.pending_row(run_id).exists() and not layout.last(run_id).exists()
