"""Launchers (the registry, local pool, in-process), run locks and concurrent writers: studies trained at scale stay
idempotent (the cluster launchers: test_launchers_cluster.py).

The studies here are tiny (one 1-block ViT on 48 fabricated images, 1-2 epochs): a study file written into a copy
of recipes/ ($MEDBOOST_RECIPES), with only the baseline variant, so its runs differ by seed alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medboost_cli import locks
from medboost_cli.launchers import cpu_threads, jobs_for, run_pool
from medboost_cli.recipes import recipes_dir
from medboost_cli.results import ResultsDir, load_results, new_row, write_row
from medboost_cli.studies import expand, load_study

from .conftest import TINY_SETS, write_medmnist
from .test_cli import SOURCE_ROOT, assert_one_line_error, run

SETS = [a for s in TINY_SETS + ["train.epochs=1"] for a in ("--set", s)]


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A study 'tiny' (BreastMNIST, baseline only) in a copy of recipes/, and fabricated data for it."""
    recipes = tmp_path / "recipes"
    shutil.copytree(recipes_dir(), recipes)
    (recipes / "studies" / "tiny.yaml").write_text("title: tiny\ntasks: [breast]\nvariants: {none: {booster: none}}\n")
    monkeypatch.setenv("MEDBOOST_RECIPES", str(recipes))
    monkeypatch.setenv("PYTHONPATH", str(SOURCE_ROOT))  # for the processes submitit starts
    write_medmnist(tmp_path / "d", "breast")
    return tmp_path


def ablate(folder: Path, *args, seeds: int = 4):
    return run("ablate", "tiny", "--seeds", seeds, "--preset", "cpu", *SETS, "--data-dir", folder / "d",
               "--results-dir", folder / "r", *args)


def plan(folder: Path, seeds: int = 4, *sets: str):
    return expand(load_study("tiny", "cpu"), seeds=seeds, preset="cpu", extra_sets=TINY_SETS + ["train.epochs=1", *sets])


def count(text: str, word: str) -> int:
    """Lines of ``text`` that start with ``word`` (the per-run lines: "trained  RUN: ...", "[1/4] start RUN")."""
    return sum(line.split("] ")[-1].startswith(word + " ") for line in text.splitlines())


def rows(folder: Path) -> pd.DataFrame:
    return load_results(folder / "r", columns=["run_id", "status", "started_at", "test_auc"])


def test_a_pool_of_two_trains_every_run_once_and_a_rerun_trains_nothing(study):
    first = ablate(study, "--jobs", "2")
    assert first.returncode == 0, first.stderr
    done = rows(study)
    assert sorted(done.run_id) == sorted(r.run_id for r in plan(study)) and set(done.status) == {"completed"}
    out = first.stdout
    assert count(out, "start") == 4 and count(out, "trained") == 4 and "4 trained, 0 skipped" in out
    assert "2 workers of" in out
    layout = ResultsDir(study / "r")
    for run_id in done.run_id:
        log = layout.log(run_id).read_text()
        assert "epoch   1/1" in log and "completed: test ACC" in log and f"{cpu_threads(2)} threads" in log
    assert not list((study / "r" / "locks").iterdir())  # every lock released

    stamps = {p.name: p.stat().st_mtime_ns for p in (study / "r" / "runs").iterdir()}
    again = ablate(study, "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert "0 trained, 4 skipped" in again.stdout and count(again.stdout, "start") == 0
    assert {p.name: p.stat().st_mtime_ns for p in (study / "r" / "runs").iterdir()} == stamps  # nothing rewritten


def test_a_rerun_after_a_mix_of_outcomes_trains_only_what_is_missing(study, monkeypatch):
    """Completed: skipped; failed and never started: trained; interrupted: resumed; being trained by a live
    process: left alone (--jobs 1, the sequential launcher, in this process)."""
    from medboost_cli import engine

    runs = plan(study, 5, "train.epochs=2")
    completed, failed, interrupted, busy, fresh = runs
    data, results = study / "d", study / "r"
    engine.train(completed.recipe, data, results, log=lambda _: None)
    write_row(results, new_row(run_id=failed.run_id, status="failed", error="RuntimeError: out of memory"))

    class StopAfterFirstEpoch(engine.SilentReporter):
        def epoch(self, record):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.train(interrupted.recipe, data, results, reporter=StopAfterFirstEpoch(), log=lambda _: None)
    me = locks.Holder.me()
    ResultsDir(results).lock(busy.run_id).parent.mkdir(parents=True, exist_ok=True)
    ResultsDir(results).lock(busy.run_id).write_text(json.dumps(asdict(me)))
    before = ResultsDir(results).row(completed.run_id).read_bytes()

    out = ablate(study, "--jobs", "1", "--set", "train.epochs=2", "--quiet", seeds=5)
    assert out.returncode == 0, out.stderr
    assert "5 runs planned, 1 already completed, 1 being trained by other processes, 3 to train" in out.stdout
    assert "3 trained, 1 skipped (completed), 0 failed, 0 interrupted, 1 being trained elsewhere" in out.stdout
    status = rows(study).set_index("run_id").status
    assert [status.get(r.run_id) for r in runs] == ["completed", "completed", "completed", None, "completed"]
    assert ResultsDir(results).row(completed.run_id).read_bytes() == before
    assert "resuming" in ResultsDir(results).log(interrupted.run_id).read_text()
    assert "resuming" in out.stderr  # --jobs 1 shows the run's log lines on the terminal


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(results: Path, run_id: str, **holder) -> Path:
    path = ResultsDir(results).lock(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {"host": socket.gethostname(), "pid": os.getpid(), "since": "2025-01-01T00:00:00+00:00"}
    path.write_text(json.dumps(base | holder))
    return path


def test_train_takes_over_a_stale_lock_and_stops_at_a_live_one(study):
    (run_id,) = [r.run_id for r in plan(study, 1)]
    args = ["train", "breast", "--booster", "none", "--preset", "cpu", *SETS, "--data-dir", study / "d", "--results-dir", study / "r"]
    lock = write_lock(study / "r", run_id)  # this very process: alive
    blocked = run(*args)
    assert_one_line_error(blocked, f"results error: {run_id} is being trained by pid {os.getpid()} on "
                                   f"{socket.gethostname()} since 2025-01-01T00:00:00+00:00", code=5)
    assert not (study / "r" / "runs").exists()  # not even a "running" row
    write_lock(study / "r", run_id, host="gpu-node-17", pid=dead_pid())  # another host: respected, whatever its pid
    assert_one_line_error(run(*args), "by pid", "on gpu-node-17", code=5)

    write_lock(study / "r", run_id, pid=dead_pid())  # this host, a process that is gone: stale
    taken = run(*args, "--quiet")
    assert taken.returncode == 0, taken.stderr
    assert "taking over the stale lock" in taken.stderr and "is gone" in taken.stderr
    assert not lock.exists()


def test_stale_lock_rules(tmp_path, monkeypatch):
    results, me = tmp_path / "r", locks.Holder.me()
    path = write_lock(results, "a-s0", host="elsewhere", pid=1, job="77", restart=0)
    assert locks.live_holder(results, "a-s0") is not None
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same Slurm job, started again after a requeue
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert "now requeued" in locks.stale_reason(locks.read_holder(path), path)
    monkeypatch.delenv("SLURM_JOB_ID")
    old = time.time() - 3 * 3600
    os.utime(path, (old, old))
    monkeypatch.setenv(locks.MAX_AGE_ENV, "2")  # silent for 3 h, more than the limit
    assert "no sign of life" in locks.stale_reason(locks.read_holder(path), path)
    monkeypatch.setenv(locks.MAX_AGE_ENV, "4")
    assert locks.live_holder(results, "a-s0") is not None
    reused = write_lock(results, "b-s0", pid=os.getpid(), pid_started=me.pid_started - 1000)  # the pid was reused
    assert "another process" in locks.stale_reason(locks.read_holder(reused), reused)
    with locks.run_lock(results, "c-s0") as held:
        assert locks.read_holder(ResultsDir(results).lock("c-s0")) == held
        with pytest.raises(locks.RunLocked, match=f"c-s0 is being trained by pid {os.getpid()}"):
            locks.acquire(results, "c-s0")
    assert not ResultsDir(results).lock("c-s0").exists()


WRITERS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from medboost_cli import locks
    from medboost_cli.results import new_row, write_row
    results, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    for i in range(n):
        write_row(results, new_row(run_id=f"{name}-s{i}", status="completed", test_auc=0.5, seed=i))
    print("ready", flush=True)
    while not go.exists():  # then all race for one run's lock at once
        time.sleep(0.005)
    try:
        with locks.run_lock(results, "contested-s0"):
            print("won", flush=True)
            time.sleep(3)
    except locks.RunLocked:
        print("lost", flush=True)
""")


def test_concurrent_writers_lose_no_rows_and_one_process_wins_a_lock(tmp_path):
    results, n, procs, go = tmp_path / "r", 40, 4, tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", WRITERS, str(results), f"w{k}", str(n), str(go)],
                                 stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
                for k in range(procs)]
    assert [c.stdout.readline().strip() for c in children] == ["ready"] * procs
    go.touch()
    said = sorted(c.communicate(timeout=120)[0].strip() for c in children)
    assert all(c.returncode == 0 for c in children)
    assert said == ["lost"] * (procs - 1) + ["won"], said
    df = load_results(results, columns=["run_id", "status"])
    assert len(df) == procs * n and df.run_id.is_unique and set(df.status) == {"completed"}


def test_failed_runs_do_not_stop_the_pool_and_set_the_exit_code(study):
    (study / "empty").mkdir()
    out = run("ablate", "tiny", "--seeds", "2", "--preset", "cpu", *SETS, "--data-dir", study / "empty",
              "--results-dir", study / "r", "--jobs", "2")
    assert out.returncode == 3, out.stderr  # the runs' own error class: data
    assert count(out.stdout, "failed") == 2 and "0 trained, 0 skipped (completed), 2 failed" in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("data error: 2 of 2 runs failed")
    log = ResultsDir(study / "r").log(plan(study, 1)[0].run_id).read_text()
    assert "Traceback" in log and "DataError" in log  # the whole story is in the run's log


def test_a_killed_worker_fails_its_run_alone_and_a_rerun_takes_its_lock_over(study):
    (planned,) = plan(study, 1)
    layout, killed = ResultsDir(study / "r"), []

    def kill_when_started(job):
        def kill():
            while (holder := locks.read_holder(layout.lock(job.run_id))) is None:  # taken before data and model
                time.sleep(0.01)
            killed.append(holder.pid)
            os.kill(holder.pid, signal.SIGKILL)  # no handler runs: the lock stays behind

        threading.Thread(target=kill, daemon=True).start()

    (outcome,) = run_pool(jobs_for([planned], study / "d", study / "r"), 1, kill_when_started, lambda _: None,
                          devices=[])
    assert outcome.status == "failed" and "worker process died (exit code -9)" in outcome.error
    assert locks.read_holder(layout.lock(planned.run_id)).pid == killed[0]
    again = ablate(study, "--quiet", seeds=1)
    assert again.returncode == 0, again.stderr
    assert "taking over the stale lock" in again.stderr and "1 trained" in again.stdout


def test_run_files_whose_columns_conflict_are_named(tmp_path):
    write_row(tmp_path, new_row(run_id="a-s0", status="completed", test_auc=0.5))
    write_row(tmp_path, new_row(run_id="b-s0", status="completed", test_auc=[0.5]))  # not a number
    write_row(tmp_path, new_row(run_id="c-s0", status="running"))  # null-typed metrics: unified
    warnings = []
    table = load_results(tmp_path, columns=["run_id", "test_auc"], warn=warnings.append)  # skipped, one warning
    assert list(table["run_id"]) == ["a-s0", "c-s0"] and len(warnings) == 1
    assert "b-s0.parquet: has columns of the wrong type (test_auc is list<element: double>" in warnings[0]
    ResultsDir(tmp_path).row("b-s0").unlink()
    assert load_results(tmp_path, columns=["run_id", "test_auc"]).fillna(-1).values.tolist() == [["a-s0", 0.5],
                                                                                                   ["c-s0", -1]]


def test_the_sequential_launcher_stops_at_the_first_failure_with_one_line(study):
    (study / "empty").mkdir()
    out = run("ablate", "tiny", "--seeds", "2", "--preset", "cpu", *SETS, "--data-dir", study / "empty",
              "--results-dir", study / "r")
    assert_one_line_error(out, "data error: data file not found", code=3)
    assert "0 trained, 0 skipped (completed), 1 failed, 0 interrupted, 1 not started" in out.stdout


# Ctrl-C as a terminal delivers it: a child of a pytest-xdist worker may inherit SIGINT as ignored, and Python
# then installs no KeyboardInterrupt handler of its own.
INTERRUPT = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from medboost_cli.cli import main
    sys.argv = ["medboost", *sys.argv[1:]]
    main()
""")


def test_ctrl_c_on_a_pool_interrupts_every_running_run_once(study):
    args = ["ablate", "tiny", "--seeds", "3", "--preset", "cpu", *SETS, "--set", "train.epochs=500", "--data-dir",
            study / "d", "--results-dir", study / "r", "--jobs", "2"]
    launcher = subprocess.Popen([sys.executable, "-c", INTERRUPT, *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
    deadline = time.time() + 300
    while len(list((study / "r").glob("checkpoints/*/last.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 130, err
    assert "0 trained, 0 skipped (completed), 0 failed, 2 interrupted, 1 not started" in out
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted by Ctrl-C") and "run the same command again" in last and "--resume" not in last
    df = rows(study)
    assert sorted(df.status) == ["interrupted", "interrupted"]  # each worker saved its row; the third never began
    assert not list((study / "r" / "locks").iterdir())


NO_CUDA_AT_IMPORT = textwrap.dedent("""
    import torch
    calls = []
    count = torch._C._cuda_getDeviceCount
    torch._C._cuda_getDeviceCount = lambda: calls.append(1) or count()
    import medboost_cli.engine
    print(len(calls), torch.cuda.is_initialized())
""")


def test_the_forkserver_imports_touch_no_cuda():
    """The pool's forkserver imports medboost_cli.engine and forks every run from it: had that import asked
    CUDA anything (cudaGetDeviceCount runs cuInit), no forked run could use a GPU."""
    out = subprocess.run([sys.executable, "-c", NO_CUDA_AT_IMPORT], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "False"]


@pytest.mark.slow
def test_the_pool_and_submitit_train_a_study_on_real_breastmnist_alike(study):
    """The tiny study on the real BreastMNIST (shared data; 546 training images, 156 test): the local pool of two
    and submitit's local executor each train both seeds once, and with one torch thread per run (set in the
    recipe, so that where a run goes changes nothing of its arithmetic) their rows hold the same test scores as
    the same study trained one run after the other in this process (--jobs 1); a rerun trains nothing."""
    from .conftest import shared_file

    data = shared_file("breastmnist.npz").parent
    real = [a for s in ["backbone.depth=1", "train.epochs=1", "train.threads=1", "data.verify=true"]
            for a in ("--set", s)]
    scores = {}
    for name, launcher, extra in (("sequential", "local", ["--jobs", "1"]), ("pool", "local", ["--jobs", "2"]),
                                  ("submitit", "submitit-local", ["--time", "20"])):
        results = study / f"r-{name}"
        args = ["ablate", "tiny", "--seeds", 2, "--preset", "cpu", *real, "--data-dir", data, "--results-dir",
                results, "--launcher", launcher, *extra]
        out = run(*args)
        assert out.returncode == 0, out.stderr
        assert "2 trained, 0 skipped" in out.stdout, out.stdout
        again = run(*args)
        assert again.returncode == 0 and "0 trained, 2 skipped" in again.stdout, again.stdout
        df = load_results(results, columns=["run_id", "status", "test_scores", "test_auc"]).set_index("run_id")
        assert set(df.status) == {"completed"} and len(df) == 2
        assert all(len(s) == 156 for s in df.test_scores)
        scores[name] = df
    base = scores["sequential"]
    for name in ("pool", "submitit"):
        other = scores[name]
        assert sorted(other.index) == sorted(base.index)
        for run_id in base.index:
            np.testing.assert_array_equal(np.asarray(list(other.test_scores[run_id])),
                                          np.asarray(list(base.test_scores[run_id])))


def test_a_launcher_is_one_registered_entry(study, monkeypatch):
    """A new launcher is a ``Launcher`` subclass and one entry in ``LAUNCHERS``: ablate runs it, --dry-run prints
    its preview, its ``takes_cluster_options`` decides whether it accepts --partition, and an unknown name lists it."""
    from medboost_cli import launchers
    from medboost_cli.launchers.base import Launcher
    from medboost_cli.launchers.jobs import run_job

    class Reversed(Launcher):
        name = "reversed"
        summary = "the runs in reverse order, in this process"

        def preview(self, launch):
            yield f"# {len(launch.todo)} runs, last first"

        def run(self, launch):
            for job in reversed(launch.todo):
                launch.started.append(job)
                launch.ended(run_job(job))

    monkeypatch.setitem(launchers.LAUNCHERS, "reversed", Reversed())
    dry = ablate(study, "--launcher", "reversed", "--dry-run", seeds=2)
    assert dry.returncode == 0 and "# 2 runs, last first" in dry.stdout, dry.stderr
    assert_one_line_error(ablate(study, "--launcher", "reversed", "--partition", "gpu", seeds=2),
                          "apply to --launcher slurm or submitit-local", code=2)
    out = ablate(study, "--launcher", "reversed", seeds=2)
    assert out.returncode == 0, out.stderr
    trained = [line.split()[1].rstrip(":") for line in out.stdout.splitlines() if line.startswith("trained ")]
    assert trained == [r.run_id for r in reversed(plan(study, 2))] and "2 trained, 0 skipped" in out.stdout
    assert_one_line_error(ablate(study, "--launcher", "pbs"), "choose local, slurm, submitit-local, reversed", code=2)


def test_local_trains_in_this_process_for_one_job_and_in_a_pool_for_more():
    from medboost_cli.launchers import LAUNCHERS, Launch
    from medboost_cli.launchers.in_process import InProcess
    from medboost_cli.launchers.local_pool import LocalPool

    local = LAUNCHERS["local"]
    chosen = {jobs: type(local.chosen(Launch([], None, [], Path("d"), Path("r"), jobs, None, False)))
              for jobs in (None, 1, 2, 8)}
    assert chosen == {None: InProcess, 1: InProcess, 2: LocalPool, 8: LocalPool}
    assert [name for name, entry in LAUNCHERS.items() if entry.takes_cluster_options] == ["slurm", "submitit-local"]
