"""A results or report folder that cannot be written (a full disk, a read-only file system, a permission denied, a
file where a folder belongs, a name too long) is one ``results error:`` line (exit 5), with nothing half-written:
no ``running`` row, no temporary file, no space held, and a completed result or an earlier report kept whole.
Exercised on a small tmpfs where the test can mount one, and always by injected OS errors."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from medboost_cli.results import load_results

from .fault_fixtures import assert_result_kept, completed, folder, snapshot, train_args  # noqa: F401 (fixtures)
from .test_cli import assert_one_line_error, run


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


def _fill(where: Path, room: int) -> None:
    """Fill the disk at ``where``, then free ``room`` bytes of it."""
    with open(where / "filler", "wb", buffering=0) as f:  # until the disk is full (unbuffered: nothing left to flush)
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(where / "filler", max(0, (where / "filler").stat().st_size - room))


def _free(disk: Path) -> int:
    stat = os.statvfs(disk)
    return stat.f_bavail * stat.f_frsize


def _allocated(disk: Path) -> int:
    """The bytes the files under ``disk`` take: what a failed write's file still held open would not show."""
    return sum(p.stat().st_blocks * 512 for p in disk.rglob("*") if p.is_file())


# room left: none (the lock fails), enough for the lock and a row (best.pt fails, 80 KB), for best.pt (last.pt fails)
@pytest.mark.parametrize("room", [0, 48 << 10, 160 << 10], ids=["full", "room-for-a-row", "room-for-best.pt"])
def test_a_full_tmpfs_keeps_a_completed_result_and_gets_its_space_back(room, completed, tmp_path):
    data, _, _ = completed
    disk = tmp_path / "disk"
    _mount_tmpfs(disk)
    try:
        results = disk / "r"
        assert run(*train_args(data, results)).returncode == 0
        (run_id,) = [p.stem for p in (results / "runs").glob("*.parquet")]
        before = snapshot(results)
        _fill(disk, room)
        free, allocated = _free(disk), _allocated(disk)
        forced = run(*train_args(data, results, "--force"))
        assert_one_line_error(forced, "the disk is full", code=5)
        assert_result_kept(results, run_id, before)
        other = run(*train_args(data, results, "--seed", "1"))  # a new run on the full disk: no "running" row
        assert_one_line_error(other, "the disk is full", code=5)
        assert "running" not in set(load_results(results)["status"]) and not list(results.rglob("*.tmp"))
        taken = (free - _free(disk)) - (_allocated(disk) - allocated)
        assert taken <= 16 << 10, taken  # no temporary file, deleted or not, holds space
        assert run("runs", "--results-dir", results).returncode == 0
    finally:
        _unmount(disk)


def _read_only(monkeypatch, root: Path, code: int) -> None:
    """Every write under ``root`` fails as a read-only file system (EROFS) or a forbidding one (EACCES) would."""
    inside = lambda path: str(Path(os.fsdecode(path)).absolute()).startswith(str(root))  # noqa: E731

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
    (lambda t: t / ("x" * 300), "has a name of 300 bytes"),  # refused as an option value, before any write
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
    assert_one_line_error(result, words, code=2 if words.startswith("has a name") else 5)
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
