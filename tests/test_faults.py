"""Faults that must never lose a finished result or end as "a bug in medboost": a retraining (``--force``) stopped
at any moment, a full disk, a results folder that cannot be written, damaged checkpoints, a diverging run. Each
class is one parametrised test: the exit code, one line naming the problem, and nothing lost."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from medboost_cli import attempts, fileio
from medboost_cli.results import ResultsDir, load_results, read_row

from .conftest import TINY_SETS, write_medmnist
from .test_cli import SOURCE_ROOT, assert_one_line_error, run

SETS = [a for s in TINY_SETS for a in ("--set", s)]


def train_args(data: Path, results: Path, *extra) -> list:
    return ["train", "breast", "--preset", "cpu", "--booster", "none", *SETS, "--data-dir", data, "--results-dir",
            results, "--quiet", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock folder aside, which holds nothing once a run ends)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> tuple[Path, Path, str]:
    """A completed tiny run: (data folder, results folder, run id)."""
    root = tmp_path_factory.mktemp("completed")
    write_medmnist(root / "d", "breast")
    done = run(*train_args(root / "d", root / "r"))
    assert done.returncode == 0, done.stderr
    (row,) = (root / "r" / "runs").glob("*.parquet")
    return root / "d", root / "r", row.stem


@pytest.fixture
def folder(completed, tmp_path) -> tuple[Path, Path, str]:
    data, results, run_id = completed
    return data, Path(shutil.copytree(results, tmp_path / "r")), run_id


def assert_result_kept(results: Path, run_id: str, before: dict[str, bytes]) -> None:
    """The completed row and best.pt byte for byte as they were; the row reads as completed; no temporary file."""
    layout = ResultsDir(results)
    for path in (layout.row(run_id), layout.best(run_id)):
        key = str(path.relative_to(results))
        assert path.read_bytes() == before[key], key
    assert read_row(results, run_id)["status"] == "completed"
    assert list(load_results(results)["status"]) == ["completed"]
    assert not list(results.rglob("*.tmp"))


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


# ------------------------------------------------------------------ a results folder that cannot be written


def _full_from(monkeypatch, kind: str, skip: int) -> None:
    """The disk fills up when the ``skip+1``-th file whose name holds ``kind`` (the lock's, a row's, a checkpoint's)
    is flushed, and stays full."""
    real, seen = os.fsync, []

    def fsync(fd):
        seen.extend([fd] if kind in os.readlink(f"/proc/self/fd/{fd}") else [])
        if len(seen) > skip:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("forced", [False, True], ids=["new-run", "forced-over-a-completed-run"])
@pytest.mark.parametrize("kind, skip", [("locks", 0), ("parquet", 0), ("best", 0), ("last", 0), ("last", 1),
                                        ("parquet", 1)],
                         ids=["the-lock", "the-running-row", "best.pt", "last.pt", "last.pt-of-epoch-2",
                              "the-final-row"])
def test_a_disk_that_fills_up_at_any_write_is_one_results_error_with_nothing_half_written(kind, skip, forced, folder,
                                                                                           monkeypatch, tmp_path):
    data, results, run_id = folder
    if not forced:
        shutil.rmtree(results)
    before = snapshot(results) if forced else {}
    with monkeypatch.context() as patched:
        _full_from(patched, kind, skip)
        stopped = run(*train_args(data, results, *(["--force"] if forced else [])))
    assert_one_line_error(stopped, "the disk is full", code=5)
    if forced:
        assert_result_kept(results, run_id, before)
    else:  # no row that says "running" for a run that no process trains
        assert "running" not in set(load_results(results)["status"]) if results.exists() else True
        assert not list(results.rglob("*.tmp"))
    assert not list(results.glob("locks/*"))


def _mount_tmpfs(where: Path, size: str = "3m") -> None:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]}); the injected faults "
                    f"cover this class")


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(where: Path) -> None:
    with open(where / "filler", "wb") as f:  # until the disk is full
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass


def test_a_full_tmpfs_keeps_a_completed_result_and_gets_its_space_back(completed, tmp_path):
    data, _, _ = completed
    disk = tmp_path / "disk"
    _mount_tmpfs(disk)
    try:
        results = disk / "r"
        assert run(*train_args(data, results)).returncode == 0
        (run_id,) = [p.stem for p in (results / "runs").glob("*.parquet")]
        before = snapshot(results)
        _fill(disk)
        free = os.statvfs(disk).f_bavail
        forced = run(*train_args(data, results, "--force"))
        assert_one_line_error(forced, "the disk is full", code=5)
        assert_result_kept(results, run_id, before)
        other = run(*train_args(data, results, "--seed", "1"))  # a new run on the full disk: no "running" row
        assert_one_line_error(other, "the disk is full", code=5)
        assert set(load_results(results)["status"]) == {"completed"}
        assert os.statvfs(disk).f_bavail >= free  # no temporary file, deleted or not, holds space
        assert run("runs", "--results-dir", results).returncode == 0
    finally:
        _unmount(disk)


def _read_only(monkeypatch, folder: Path, code: int) -> None:
    """Every write under ``folder`` fails as a read-only file system (EROFS) or a forbidding one (EACCES) would."""
    inside = lambda path: str(Path(os.fsdecode(path)).absolute()).startswith(str(folder))  # noqa: E731

    def refuse(real, writes=lambda *a, **k: True):
        def call(path, *args, **kwargs):
            if not isinstance(path, int) and inside(path) and writes(*args, **kwargs):
                raise OSError(code, os.strerror(code), os.fsdecode(path))
            return real(path, *args, **kwargs)
        return call

    flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    monkeypatch.setattr(os, "open", refuse(os.open, lambda flag, *a, **k: bool(flag & flags)))
    for name in ("mkdir", "unlink", "replace", "rename", "rmdir"):
        monkeypatch.setattr(os, name, refuse(getattr(os, name)))


READ_ONLY = [pytest.param(errno.EROFS, "read-only", id="erofs"), pytest.param(errno.EACCES, "permission denied",
                                                                              id="eacces")]


@pytest.mark.parametrize("code, words", READ_ONLY)
def test_a_read_only_results_folder_reads_and_refuses_writes_in_one_line(code, words, folder, monkeypatch, tmp_path):
    data, results, run_id = folder
    before = snapshot(results)
    with monkeypatch.context() as patched:
        _read_only(patched, results, code)
        assert run(*train_args(data, results, "--resume")).returncode == 0  # completed: read, no lock needed
        assert_one_line_error(run(*train_args(data, results)), "already completed", code=5)
        assert run("runs", "--results-dir", results).returncode == 0
        evaluated = run("evaluate", run_id, "--data-dir", data, "--results-dir", results)
        assert evaluated.returncode == 0, evaluated.stderr
        assert_one_line_error(run(*train_args(data, results, "--force")), words, code=5)
        assert_one_line_error(run(*train_args(data, results, "--seed", "1")), words, code=5)
        assert_one_line_error(run("report", "--results-dir", results, "--out", results / "reports", "--n-boot", "100"),
                              words, code=5)
    assert snapshot(results) == before


def test_a_read_only_tmpfs_reads_and_refuses_writes_in_one_line(completed, tmp_path):
    data, _, _ = completed
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        results = disk / "r"
        assert run(*train_args(data, results)).returncode == 0
        (run_id,) = [p.stem for p in (results / "runs").glob("*.parquet")]
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = snapshot(results)
        assert run(*train_args(data, results, "--resume")).returncode == 0
        assert run("runs", "--results-dir", results).returncode == 0
        assert run("evaluate", run_id, "--data-dir", data, "--results-dir", results).returncode == 0
        assert_one_line_error(run(*train_args(data, results, "--force")), "read-only", code=5)
        assert_one_line_error(run("report", "--results-dir", results, "--out", results / "reports", "--n-boot", "100"),
                              "read-only", code=5)
        assert snapshot(results) == before
    finally:
        _unmount(disk)


@pytest.mark.parametrize("where, words", [
    (lambda t: t / "a-file", "is a file, not a results folder"),
    (lambda t: t / "a-file" / "results", "a part of that path is a file"),
    (lambda t: t / ("x" * 300), "longer than the file system allows"),
    (lambda t: t / ("x" * 200) / ("y" * 200) / ("z" * 200), "..."),
], ids=["a-file", "under-a-file", "name-too-long", "long-path"])
def test_a_results_folder_that_cannot_be_one_is_one_results_error(where, words, completed, tmp_path):
    data, _, _ = completed
    (tmp_path / "a-file").write_text("not a folder")
    folder = where(tmp_path)
    result = run(*train_args(data, folder))
    if words == "...":  # a long path that the file system takes: trains
        assert result.returncode == 0, result.stderr
        return
    assert_one_line_error(result, words, code=5)
    assert len(result.stderr) < 600
    if folder.name == "a-file":
        assert_one_line_error(run("runs", "--results-dir", folder), "is a file, not a results folder", code=5)


def test_a_report_into_a_full_folder_keeps_the_earlier_report_whole(folder, monkeypatch, tmp_path):
    _, results, _ = folder
    out = tmp_path / "reports"
    assert run("report", "--results-dir", results, "--out", out, "--n-boot", "100").returncode == 0
    before = snapshot(out)
    for name in ("cells.csv", "pairs.csv", "report.md"):
        with monkeypatch.context() as patched:
            _full_from(patched, name, 0)
            stopped = run("report", "--results-dir", results, "--out", out, "--n-boot", "100")
        assert_one_line_error(stopped, "the disk is full", code=5)
        assert snapshot(out) == before, name  # every file the earlier report wrote, whole; no temporary file


# ------------------------------------------------------------------------------------------ damaged checkpoints


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Path, Path, str]:
    """A tiny run interrupted after its first epoch: its last.pt and best.pt wait for --resume."""
    from medboost_cli import engine

    root = tmp_path_factory.mktemp("interrupted")
    write_medmnist(root / "d", "breast")
    original = engine.Run.save

    def save(self, improved):
        original(self, improved)
        raise KeyboardInterrupt

    engine.Run.save = save
    try:
        assert run(*train_args(root / "d", root / "r")).returncode == 130
    finally:
        engine.Run.save = original
    (row,) = (root / "r" / "runs").glob("*.parquet")
    return root / "d", root / "r", row.stem


def _edit(path: Path, change) -> None:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def _other_models_optimizer(ckpt) -> None:
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(other.parameters())
    other(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    ckpt["optimizer"] = optimizer.state_dict()


def _optimizer_shapes(ckpt) -> None:
    state = ckpt["optimizer"]["state"]
    first = next(iter(state))
    state[first]["exp_avg"] = torch.zeros(7, 7)


def _wrong_shape(ckpt) -> None:
    name = next(iter(ckpt["trainable"]))
    ckpt["trainable"][name] = torch.zeros(5, 3)


CHECKPOINTS = {  # id -> (which file, the damage, what the line says); last.pt is read by --resume, best.pt by evaluate
    "last-format-only": ("last", lambda c: [c.pop(k) for k in list(c) if k != "format"], "it lacks epoch, history"),
    "last-optimizer-of-another-model": ("last", _other_models_optimizer,
                                        "optimizer state comes from another model (parameter groups of [4] tensors"),
    "last-optimizer-shapes": ("last", _optimizer_shapes, "optimizer state comes from another model (exp_avg"),
    "last-weights-wrong-shape": ("last", _wrong_shape, "its weights have the wrong shapes"),
    "last-history-not-a-list": ("last", lambda c: c.update(history="x"), "damaged entries: history is a str"),
    "best-wrong-shapes": ("best", _wrong_shape, "its weights have the wrong shapes"),
    "best-without-frozen-hash": ("best", lambda c: c.pop("frozen_sha256"), "it lacks frozen_sha256"),
    "best-without-trainable": ("best", lambda c: c.pop("trainable"), "it lacks trainable"),
    "best-weights-of-another-model": ("best", lambda c: c["trainable"].update(extra=torch.ones(1)),
                                      "its weights come from another model (missing none, unexpected extra)"),
    "best-weights-not-tensors": ("best", lambda c: c["trainable"].update(extra="text"), "not named tensors (extra)"),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_a_damaged_checkpoint_is_one_model_file_error_before_anything_is_loaded(name, interrupted, completed,
                                                                                tmp_path):
    which, damage, fragment = CHECKPOINTS[name]
    data, source, run_id = interrupted if which == "last" else completed
    results = Path(shutil.copytree(source, tmp_path / "r"))
    path = ResultsDir(results).last(run_id) if which == "last" else ResultsDir(results).best(run_id)
    _edit(path, damage)
    before = snapshot(results)
    if which == "last":
        result = run(*train_args(data, results, "--resume"))
    else:
        result = run("evaluate", run_id, "--data-dir", data, "--results-dir", results)
    assert_one_line_error(result, str(path), fragment, code=4)
    assert snapshot(results) == before


# ------------------------------------------------------------------------------------------ a diverging run


def _nan_val_scores(monkeypatch):
    from medboost_cli import engine

    real = engine.predict

    def predict(model, target, *args, **kwargs):
        scores, loss = real(model, target, *args, **kwargs)
        return scores * float("nan") if len(target.labels) == 16 else scores, loss  # the val split: 16 images

    monkeypatch.setattr(engine, "predict", predict)


@pytest.mark.parametrize("inject, args, fragment", [
    (lambda m: None, ["--lr", "1e10"], "diverged at epoch 1 of 2"),
    (_diverges, [], "(training loss: nan)"),
    (_nan_val_scores, [], "(val scores: NaN or infinite)"),
], ids=["lr-1e10", "nan-loss", "nan-val-scores"])
def test_a_diverging_run_ends_as_a_failed_run_that_says_what_to_try(inject, args, fragment, completed, tmp_path,
                                                                   monkeypatch):
    data, _, _ = completed
    with monkeypatch.context() as patched:
        inject(patched)
        result = run(*train_args(data, tmp_path / "r", *args))
    assert_one_line_error(result, "diverged at epoch", fragment, "lower train.lr", "train.grad_clip", code=2)
    (row,) = load_results(tmp_path / "r").to_dict("records")
    assert row["status"] == "failed" and "diverged at epoch" in row["error"]


# ------------------------------------------------------------------------------------------ one writer


WRITERS = {"write_text", "write_bytes", "to_csv", "to_parquet", "savefig", "touch", "savez", "savez_compressed",
           "write_table", "save"}
ATOMIC = {"atomic_write", "atomic_write_file"}
ALLOWED = {("fileio.py", None), ("locks.py", "os.open")}  # the writer itself; lock files (created with O_EXCL)


def _writes(tree) -> list[tuple[int, str]]:
    """(line, call) of every call in ``tree`` that writes a file other than through fileio."""
    import ast

    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def through_fileio(node) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ATOMIC:
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, text = node.func, ast.unparse(node.func)
        if isinstance(func, ast.Attribute) and func.attr in WRITERS and (func.attr != "save" or text == "torch.save"):
            found.append((node.lineno, text))
        elif text == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                    and set(a.value) & set("wax+") for a in node.args[1:2] + [
                                        k.value for k in node.keywords if k.arg == "mode"]):
            found.append((node.lineno, text))
        elif text == "os.open" and re.search(r"O_(WRONLY|RDWR|CREAT)", ast.unparse(node)):
            found.append((node.lineno, text))
    return [(line, text) for line, text in found if not through_fileio(_node_at(tree, line, text))]


def _node_at(tree, line, text):
    import ast

    return next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == line
                and ast.unparse(n.func) == text)


def test_every_file_is_written_through_the_one_atomic_writer():
    import ast

    package = Path(attempts.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for line, text in _writes(ast.parse(path.read_text())):
            if (path.name, None) not in ALLOWED and (path.name, text) not in ALLOWED:
                offenders.append(f"{path.relative_to(package)}:{line} {text}")
    assert not offenders, f"write these through medboost_cli.fileio: {offenders}"


def test_the_writer_check_finds_a_direct_write():
    import ast

    tree = ast.parse("import torch\ndef f(p, x):\n    torch.save(x, p)\n    open(p, 'w').write('x')\n"
                     "    atomic_write(p, lambda tmp: torch.save(x, tmp))\n    p.write_text('x')\n")
    assert sorted(text for _, text in _writes(tree)) == ["open", "p.write_text", "torch.save"]
