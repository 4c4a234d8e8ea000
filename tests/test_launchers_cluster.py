"""The cluster launchers: submitit-local runs and collects a study, a preempted job requeues and resumes, slurm
submits one array of the runs still to train (through a stand-in sbatch), and cluster options and profiles are
checked in one line each. The tiny study, its fixture and functions are test_launchers.py's."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from medboost_cli import locks
from medboost_cli.launchers import ClusterOptions, Job, SubmititRun, submit, wait_for
from medboost_cli.launchers.submitit_local import SubmititLocal
from medboost_cli.results import ResultsDir, load_results

from .test_cli import assert_one_line_error
from .test_launchers import ablate, count, plan, rows, study  # noqa: F401  (study: the fixture)


def test_submitit_local_runs_the_study_and_collects_the_outcomes(study):
    out = ablate(study, "--launcher", "submitit-local", "--time", "20", seeds=2)
    assert out.returncode == 0, out.stderr
    assert count(out.stdout, "submitted") == 2 and count(out.stdout, "trained") == 2
    assert "2 trained, 0 skipped" in out.stdout
    assert set(rows(study).status) == {"completed"} and len(rows(study)) == 2


def test_a_preempted_submitit_job_checkpoints_requeues_and_resumes(study, monkeypatch):
    """The chain a Slurm preemption or time limit sets off (SIGUSR2 while training): the run stops at once with
    its last epoch saved and an "interrupted" row, submitit's handler is then called (here a stand-in for it, which
    would checkpoint and requeue), and the submission ``checkpoint`` returns resumes from last.pt to the metrics
    of an uninterrupted run."""
    from medboost_cli import progress

    (recipe_run,) = plan(study, 1, "train.epochs=2")
    job = Job.of(recipe_run, study / "d", study / "r")
    handed_over = []

    def submitit_handler(signum, frame):
        handed_over.append(signum)
        raise SystemExit(-1)  # submitit exits after requeueing

    real_epoch = progress.RichReporter.epoch

    def preempt_after_first_epoch(self, record):
        real_epoch(self, record)
        if record["epoch"] == 0:
            os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        monkeypatch.setattr(progress.RichReporter, "epoch", preempt_after_first_epoch)
        with pytest.raises(SystemExit):
            SubmititRun(job)()
        monkeypatch.setattr(progress.RichReporter, "epoch", real_epoch)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handed_over == [signal.SIGUSR2]
    row = load_results(study / "r", columns=["status", "error", "epochs_done"]).iloc[0]
    assert row.status == "interrupted" and "SIGUSR2" in row.error and row.epochs_done == 1
    assert ResultsDir(study / "r").last(job.run_id).exists()

    delayed = SubmititRun(job).checkpoint()
    assert delayed.kwargs == {"resume": True}
    outcome = delayed.result()
    assert outcome.status == "trained"
    assert "resuming" in ResultsDir(study / "r").log(job.run_id).read_text()
    full = SubmititRun(Job.of(recipe_run, study / "d", study / "full"))()
    a = load_results(study / "r").iloc[0]
    b = load_results(study / "full").iloc[0]
    assert outcome.test_auc == full.test_auc and a.best_epoch == b.best_epoch and a.val_auc == b.val_auc
    assert np.array_equal(np.stack(a.test_scores), np.stack(b.test_scores))


def test_a_real_preemption_of_a_submitit_local_job_requeues_it_and_it_resumes(study):
    """SIGUSR2 to the training process, as Slurm sends before a time limit or a preemption: submitit requeues
    the job and the run resumes from last.pt (the in-process test above checks the resumed metrics)."""
    (planned,) = plan(study, 1, "train.epochs=200", "train.steps=null")
    job = Job.of(planned, study / "d", study / "r", threads=1)
    executor = SubmititLocal.executor(study / "r", ClusterOptions(time=20))
    ((handle, _),) = submit([job], executor)
    layout = ResultsDir(study / "r")
    deadline = time.time() + 300
    while not layout.last(job.run_id).exists() and time.time() < deadline:
        time.sleep(0.01)
    # Stopped first, the run cannot finish its epochs (~40 ms each) before the signal lands, however loaded the
    # machine; SIGUSR2 is then delivered when it continues.
    pid = locks.read_holder(layout.lock(job.run_id)).pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert "completed" not in layout.log(job.run_id).read_text(), "the run ended before it could be preempted"
        os.kill(pid, signal.SIGUSR2)
    finally:
        os.kill(pid, signal.SIGCONT)
    (outcome,) = wait_for([(handle, job)], lambda _: None, poll_s=0.2)
    assert outcome.status == "trained", outcome
    log = layout.log(job.run_id).read_text()
    assert "interrupted by SIGUSR2" in log and "resuming" in log and log.count(" on ") >= 2
    assert "Requeued job" in handle.stdout()
    assert load_results(study / "r", columns=["status", "epochs_done"]).iloc[0].tolist() == ["completed", 200]


def test_slurm_dry_run_prints_the_sbatch_script_and_the_runs(study):
    profile = study / "lab.yaml"
    profile.write_text("partition: cpu\naccount: lab42\ncpus-per-run: 8\nsetup: [source /opt/venv/bin/activate]\n"
                       "sbatch: {constraint: a100}\n")
    out = ablate(study, "--launcher", "slurm", "--profile", profile, "--partition", "gpu", "--gpus-per-run", "1",
                 "--time", "1-02:00:00", "--mem", "32G", "--jobs", "3", "--dry-run")
    assert out.returncode == 0, out.stderr
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab42", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --time=1560", "#SBATCH --array=0-3%3",
                 "#SBATCH --signal=USR2@120", "#SBATCH --constraint=a100", "source /opt/venv/bin/activate"):
        assert line in out.stdout, line
    assert out.stdout.count("todo  medboost train breast") == 4
    assert not (study / "r").exists()  # nothing submitted, nothing written


@pytest.mark.parametrize("content, args, fragments", [
    ("gpus: 1\n", [], ["lab.yaml: bad profile key 'gpus'", "keys: partition"]),
    ("time: soon\n", [], ["lab.yaml: bad profile key 'time'", "'soon' is not a Slurm time"]),
    ("mem: lots\n", [], ["bad profile key 'mem'"]),
    ("- a list\n", [], ["lab.yaml"]),
    ("partition: gpu\n", ["--cpus-per-run", "0"], ["--cpus-per-run"]),
    ("partition: gpu\n", ["--time", "1:2:3:4"], ["--time '1:2:3:4'"]),
])
def test_bad_profiles_and_options_are_one_line(study, content, args, fragments):
    profile = study / "lab.yaml"
    profile.write_text(content)
    out = ablate(study, "--launcher", "slurm", "--profile", profile, *args, "--dry-run")
    assert_one_line_error(out, *fragments, code=2)


def test_cluster_options_need_a_cluster_launcher(study):
    assert_one_line_error(ablate(study, "--partition", "gpu"), "apply to --launcher slurm", code=2)
    assert_one_line_error(ablate(study, "--launcher", "slurm", "--profile", study / "none.yaml", "--dry-run"),
                          "profile", "none.yaml not found", code=2)
    assert_one_line_error(ablate(study, "--launcher", "pbs"), "--launcher pbs: choose local, slurm", code=2)


def test_slurm_submits_one_array_of_the_runs_still_to_train(study, monkeypatch):
    """Through a stand-in sbatch (and srun, which submitit looks for): the runs not completed go out as one job
    array, each array task with the pickled run it trains."""
    bin_dir = study / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {study / 'submitted.sh'}\necho Submitted batch job 4242\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = ablate(study, "--launcher", "slurm", "--partition", "gpu", "--time", "90")
    assert out.returncode == 0, out.stderr
    assert count(out.stdout, "submitted") == 4 and "as job 4242_3" in out.stdout
    script = (study / "submitted.sh").read_text()
    assert "#SBATCH --array=0-3%4" in script and "#SBATCH --partition=gpu" in script and "--time=90" in script
    pickles = list((study / "r" / "submitit").rglob("4242_*_submitted.pkl"))
    assert len(pickles) == 4
    import cloudpickle

    delayed = cloudpickle.loads(pickles[0].read_bytes())
    assert isinstance(delayed.function, SubmititRun) and delayed.function.job.run_id in out.stdout
