"""Data-parallel training (``medboost_cli.distributed``): one run over several processes gives the one-process
run's result; a failure on one process ends them all with one line and its exit code; a run whose process was
killed resumes on the same or another number of processes.

The multi-process tests start real processes (gloo on this CPU, 2 processes) with ``medboost train --devices 2``
or torchrun. Failures are injected with a ``sitecustomize`` module on the children's PYTHONPATH (``fault_env``),
so the code under test has no test hooks. The recipe has no BatchNorm (``backbone.stem=patch``) and no dropout,
the two things that legitimately differ between process counts, and an uneven global batch (46 samples in
batches of 15: shares of 8 and 7, and a last batch of one sample, which leaves the second process none).

Precision: what is exact by construction (the shares, the weights, one step's averaged gradient) is checked in
this process, in fp32 and in bf16 asked for explicitly. Whole trainings on 2 processes and on 1 are compared in
fp32, pinned in the recipe (``train.precision`` and ``booster.dtype``): in bf16 the processes' matmuls over
shares of a batch round differently from one matmul over the batch, and a few epochs grow that into differences
of 3.5e-3 in a test probability (AMD EPYC with AVX512-BF16, 2026-12-06), which no tight bound survives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from medboost_cli import distributed
from medboost_cli.data import BatchTransform
from medboost_cli.distributed import World
from medboost_cli.engine import evaluate_run, make_transforms, train, train_step
from medboost_cli.errors import ConfigError
from medboost_cli.hardware import autocast_dtype
from medboost_cli.models import build_model
from medboost_cli.recipes import load_recipe
from medboost_cli.results import COLUMNS, load_results, new_row, read_row

from .conftest import TINY_SETS, write_medmnist
from .test_cli import SOURCE_ROOT, assert_one_line_error

SETS = ["data.verify=false", "backbone.dim=32", "backbone.depth=1", "backbone.heads=2", "backbone.stem=patch",
        "backbone.drop_path=0", "train.epochs=2", "train.batch_size=15", "train.eval_batch_size=5",
        "train.warmup_epochs=0", "train.precision=fp32", "booster.dtype=fp32"]
SIZES = (46, 16, 23)  # train, val, test
STEPS_PER_EPOCH = 4  # ceil(46 / 15)
# The largest difference in a test probability between 2 processes and 1, in fp32 (float32 rounding: the processes'
# gradients are averaged, not summed in one pass): 2.4e-7 to 6.9e-7 on an AMD EPYC with AVX2 only, 3.3e-7 on an AMD
# EPYC with AVX512-BF16 (2026-12-06). A CPU with AMX runs fp32 in the same AVX-512 kernels. The bound is 15x those.
TOLERANCE = 1e-5
TIMEOUT = 600  # seconds per launch: a start-up imports torch in every process, slow on a loaded machine

# Put on the children's PYTHONPATH: on the process whose RANK is the first field of $MEDBOOST_TEST_FAULT, the
# STEP-th training step (counted over the whole run) raises a data error or SIGKILLs the process.
FAULT_HOOK = '''
import os

_fault = os.environ.get("MEDBOOST_TEST_FAULT")  # "RANK:STEP:raise" or "RANK:STEP:kill"
if _fault and os.environ.get("RANK") == _fault.split(":")[0]:
    import signal

    from medboost_cli import engine
    from medboost_cli.errors import DataError

    _rank, _step, _action = _fault.split(":")
    _real, _calls = engine.train_step, []

    def train_step(*args, **kwargs):
        _calls.append(1)
        if len(_calls) == int(_step):
            if _action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise DataError(f"injected failure on rank {_rank} at step {_step}")
        return _real(*args, **kwargs)

    engine.train_step = train_step
'''


def recipe():
    return load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "rllm")], sets=SETS)


def command(data_dir: Path, results_dir: Path, *extra) -> list[str]:
    sets = [a for s in SETS for a in ("--set", s)]
    return ["train", "breast", "--preset", "cpu", "--booster", "rllm", *sets, "--data-dir", str(data_dir),
            "--results-dir", str(results_dir), "--quiet", *map(str, extra)]


def launch(args: list[str], env: dict | None = None, torchrun: bool = False) -> subprocess.CompletedProcess:
    """``python -m medboost_cli ARGS`` (or under ``torchrun --nproc-per-node 2``) in a child process."""
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if torchrun \
        else [sys.executable]
    return subprocess.run(head + ["-m", "medboost_cli", *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env=env or {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})


@pytest.fixture
def fault_env(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    return lambda fault: {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{SOURCE_ROOT}", "MEDBOOST_TEST_FAULT": fault}


def assert_one_interrupted_line(result, code):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == code and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("interrupted by") and "--resume" in lines[0], lines[0]


def only_row(results_dir: Path) -> pd.Series:
    (path,) = list((results_dir / "runs").glob("*.parquet"))
    return pd.read_parquet(path).iloc[0]


def scores(row) -> np.ndarray:
    return np.stack(row["test_scores"] if isinstance(row, dict) else row.test_scores)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same recipe trained by 2 processes (``--devices 2``) and by this one."""
    root = tmp_path_factory.mktemp("pair")
    write_medmnist(root / "d", "breast", n=SIZES)
    two = launch(command(root / "d", root / "two", "--devices", 2))
    assert two.returncode == 0, two.stderr
    one = train(recipe(), root / "d", root / "one", log=lambda message: None)
    return root / "d", root / "two", two, one


# ----------------------------------------------------------------------------------------------- in-process


def test_shares_cover_every_row_once_in_order():
    for n in (0, 1, 7, 15, 16):
        for size in (1, 2, 3, 4):
            shares = [World(rank, size).share(n) for rank in range(size)]
            assert [lo for lo, _ in shares] == [0] + [hi for _, hi in shares[:-1]] and shares[-1][1] == n
            lengths = [hi - lo for lo, hi in shares]
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_a_batchs_shares_weigh_their_rows_so_the_mean_is_the_whole_batch():
    for n in (1, 2, 7, 15):
        for size in (1, 2, 3):
            shares = [World(rank, size).batch_share(n) for rank in range(size)]
            assert sum(s.count for s in shares) == n
            assert sum(s.weight for s in shares) == pytest.approx(size)  # DDP divides the sum by size
            for s in shares:
                assert s.weight == (s.count * size / n if s.count else 0.0)
                assert s.rows.stop - s.rows.start == max(s.count, 1)  # a process without rows takes one at weight 0


@pytest.mark.parametrize("n", [15, 1])
# Relative gradient error measured on an AMD EPYC with AVX512-BF16 (2026-12-06): 4.9e-8 in fp32, 2.1e-3 in bf16; shares
# weighted 1.0 each, as a process that ignored the uneven split would, miss by 1.9e-2: both bounds catch that.
@pytest.mark.parametrize("precision, bound", [("fp32", 1e-5), ("bf16", 1e-2)])
def test_one_step_on_two_shares_gives_the_whole_batchs_gradient(precision, bound, n):
    """One training step as 2 processes take it (each its rows of the batch, at its weight) and as one: the mean of
    the two gradients, which is what DDP's all-reduce makes of them, is the whole batch's gradient, to fp32
    rounding in fp32 and to bf16's in bf16 (asked for explicitly, so every CPU checks both; bf16 is emulated, and
    slow, where the CPU lacks it: a 1-block model). Batch 15 gives shares of 8 and 7; batch 1 leaves the second
    process a weight-0 row."""
    r = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "rllm")],
                    sets=SETS + [f"train.precision={precision}", f"booster.dtype={precision}"])
    model = build_model(r, r.task_info).model.train()
    transform, amp = make_transforms(r, model.backbone)[0], autocast_dtype(precision, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 2, (n, 1), generator=g)
    theta = transform.maps(n, 2, torch.Generator().manual_seed(1))
    sgd = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)  # leaves weights as they are

    def gradient(rows: slice, weight: float) -> torch.Tensor:
        train_step(model, sgd, images[rows], labels[rows], transform, None, amp, r.task_info.task_type,
                   theta=theta[rows], loss_scale=weight)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    whole = gradient(slice(0, n), 1.0)
    shares = [World(rank, 2).batch_share(n) for rank in range(2)]
    mean = sum(gradient(s.rows, s.weight) for s in shares) / 2
    assert float(whole.norm()) > 0
    assert float((mean - whole).norm() / whole.norm()) < bound


def test_world_comes_from_the_launcher_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.world() == World()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.world() == World(3, 4, 1, 2)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4 of WORLD_SIZE=4"):
        distributed.world()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="must be integers"):
        distributed.world()


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    """Without a GPU here: CUDA is faked where the device is resolved; the process group is not involved."""
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device(name.replace("auto", "cuda")))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.device_for("auto") == torch.device("cuda", 1) and chosen == [1]
    assert distributed.device_for("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="use train.device=cuda"):
        distributed.device_for("cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"which has 1 GPU\(s\); start at most 1"):
        distributed.device_for("cuda")


def test_a_share_of_a_batch_is_augmented_as_in_the_whole_batch():
    """The maps are drawn for the whole batch and sliced: a process's rows look as they would in one process."""
    tf = BatchTransform(out_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, hflip=0.5, scale=(0.7, 1.0),
                        translate=0.1, rotate=15)
    images = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    whole = tf(images, torch.Generator().manual_seed(3))
    theta = tf.maps(7, 2, torch.Generator().manual_seed(3))
    for rank in range(3):
        lo, hi = World(rank, 3).share(7)
        assert torch.equal(tf(images[lo:hi], theta=theta[lo:hi]), whole[lo:hi])


def test_ddp_leaves_the_frozen_layer_alone(monkeypatch):
    """DDP neither broadcasts nor reduces F_L (each process loads it), and reduces every trainable parameter."""
    monkeypatch.setenv("WORLD_SIZE", "2")  # wrap as for 2 processes, in a process group of this one
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        model = build_model(recipe(), recipe().task_info).model
        ddp = distributed.wrap(model, torch.device("cpu"))
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        assert frozen and all(name.startswith("booster.lm.") for name in frozen)
        assert ddp.parameters_to_ignore == frozen
        ddp(torch.randn(4, 3, 28, 28)).sum().backward()
        for name, p in model.named_parameters():
            assert (p.grad is None) == (name in frozen), name
        assert distributed.unwrap(ddp) is model
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("task, backbone, mode", [("breast", "vit-mini", mode) for mode in
                                                  ("none", "rllm", "out", "hybrid", "mlp")]
                         + [("adrenal3d", "vit3d", "rllm"), ("adrenal3d", "vivit-s", "rllm")])
def test_every_trainable_parameter_takes_part_in_every_step(task, backbone, mode):
    """Why DDP needs no ``find_unused_parameters``: one step gives every trainable parameter a gradient."""
    sets = ["backbone.dim=32", "backbone.depth=1", "backbone.heads=2"]
    sets += ["backbone.dim_head=16", "backbone.temporal_depth=1"] if backbone == "vivit-s" else \
        ["backbone.dim_head=16"] if backbone == "vit3d" else ["backbone.stem=conv"]
    r = load_recipe(task, preset="cpu", flags=[("--booster", "booster.mode", mode),
                                               ("--backbone", "backbone.name", backbone)], sets=sets)
    model = build_model(r, r.task_info).model
    shape = (2, 3, 28, 28) if r.task_info.dims == 2 else (2, 3, 28, 28, 28)
    model(torch.randn(shape)).sum().backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


def test_rows_from_before_the_columns_read_as_one_process(tmp_path):
    row = new_row(run_id="breast-vit-mini-none-0000aaaa-s0", status="completed", task="breast", device="cpu (x)")
    table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS if c not in ("world_size", "devices")}])
    (tmp_path / "runs").mkdir()
    pq.write_table(table, tmp_path / "runs" / f"{row['run_id']}.parquet")
    old = read_row(tmp_path, row["run_id"])
    assert old["world_size"] == 1 and json.loads(old["devices"]) == ["cpu (x)"]
    df = load_results(tmp_path)
    assert list(df.columns) == COLUMNS and df.world_size.tolist() == [1] and df.devices.tolist() == ['["cpu (x)"]']


# ------------------------------------------------------------------------------------------ multi-process


def test_two_processes_give_the_one_process_result(pair):
    _, two_dir, two, one = pair
    row = only_row(two_dir)
    assert row.status == "completed" and row.world_size == 2 and one["world_size"] == 1
    assert len(json.loads(row.devices)) == 2 and json.loads(one["devices"]) == [one["device"]]
    assert row.run_id == one["run_id"]  # the same run whatever the number of processes: --resume crosses them
    assert np.abs(scores(row) - scores(one)).max() < TOLERANCE
    assert row.best_epoch == one["best_epoch"] and row.test_auc == pytest.approx(one["test_auc"], abs=TOLERANCE)
    history, reference = json.loads(row.history_json), json.loads(one["history_json"])
    for h, r in zip(history, reference, strict=True):
        assert h["train_loss"] == pytest.approx(r["train_loss"], abs=TOLERANCE) and h["lr"] == r["lr"]
        assert h["val_loss"] == pytest.approx(r["val_loss"], abs=TOLERANCE)
    assert two.stdout.count("best epoch") == 1 and two.stderr == ""  # rank 0 alone prints; nobody warns


def test_two_processes_in_micro_batches_give_the_one_process_result(pair, tmp_path):
    """train.micro_batch=3 on 2 processes (shares of 8 and 7 in chunks of 3, gradients all-reduced once per step;
    the last batch of 1 sample leaves one process a weight-0 sample): the one-process, one-pass result, and
    another run id (the key is part of the experiment)."""
    data_dir, _, _, one = pair
    two = launch(command(data_dir, tmp_path / "two", "--devices", 2, "--set", "train.micro_batch=3"))
    assert two.returncode == 0, two.stderr
    row = only_row(tmp_path / "two")
    assert row.status == "completed" and row.world_size == 2 and row.run_id != one["run_id"]
    assert json.loads(row.config_json)["train"]["micro_batch"] == 3
    assert np.abs(scores(row) - scores(one)).max() < TOLERANCE and row.best_epoch == one["best_epoch"]
    for h, r in zip(json.loads(row.history_json), json.loads(one["history_json"]), strict=True):
        assert h["train_loss"] == pytest.approx(r["train_loss"], abs=TOLERANCE)


def test_a_run_with_batchnorm_and_dropout_records_what_its_checkpoint_gives(pair, tmp_path):
    """The CPU preset's stem has BatchNorm, whose statistics each CPU process takes from its own share: the
    processes score their shards with rank 0's buffers, those of the checkpoint, so `evaluate` gives the scores."""
    data_dir = pair[0]
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    done = launch(["train", "breast", "--preset", "cpu", *sets, "--data-dir", data_dir, "--results-dir",
                   tmp_path, "--quiet", "--devices", "2"])
    assert done.returncode == 0, done.stderr
    row = only_row(tmp_path)
    val = evaluate_run(row.run_id, tmp_path, data_dir, "val")
    best = json.loads(row.history_json)[row.best_epoch]  # scored when the checkpoint was written
    assert val["loss"] == pytest.approx(best["val_loss"], abs=TOLERANCE), (val["loss"], best["val_loss"])
    test = evaluate_run(row.run_id, tmp_path, data_dir, "test")
    assert np.abs(test["scores"] - scores(row)).max() < TOLERANCE


def test_sigkill_of_one_process_then_resume_on_two_and_on_one(pair, fault_env, tmp_path):
    """Process 1 is killed in the middle of the second epoch: the run stops, interrupted after epoch 1; --resume
    completes it under torchrun on 2 processes and in this process alone, with the uninterrupted run's result."""
    data_dir, two_dir, _, one = pair
    cut = tmp_path / "cut"
    killed = launch(command(data_dir, cut, "--devices", 2), env=fault_env(f"1:{STEPS_PER_EPOCH + 2}:kill"))
    assert_one_interrupted_line(killed, code=143)
    row = only_row(cut)
    assert row.status == "interrupted" and row.epochs_done == 1 and "--resume" in row.error
    (last,) = list(cut.glob("checkpoints/*/last.pt"))
    assert torch.load(last, weights_only=True)["epoch"] == 0
    shutil.copytree(cut, tmp_path / "cut-again")

    again = launch(command(data_dir, cut, "--resume"), torchrun=True)
    assert again.returncode == 0, again.stderr
    alone = train(recipe(), data_dir, tmp_path / "cut-again", resume=True, log=lambda message: None)
    reference = scores(only_row(two_dir))
    for resumed, size in ((only_row(cut), 2), (alone, 1)):
        assert resumed["status"] == "completed" and resumed["epochs_done"] == 2 and resumed["world_size"] == size
        assert np.abs(scores(resumed) - reference).max() < TOLERANCE
        assert np.abs(scores(resumed) - scores(one)).max() < TOLERANCE


def test_a_failure_on_one_process_ends_all_with_its_line_and_exit_code(pair, fault_env, tmp_path):
    data_dir = pair[0]
    failed = launch(command(data_dir, tmp_path / "r", "--devices", 2), env=fault_env("1:3:raise"))
    assert_one_line_error(failed, "data error: rank 1: injected failure on rank 1 at step 3", code=3)
    row = only_row(tmp_path / "r")  # rank 0 stopped in its collective; the run can be resumed
    assert row.status == "interrupted" and "injected failure on rank 1" in row.error


def test_a_bad_data_file_seen_by_every_process_is_one_line(tmp_path):
    path = write_medmnist(tmp_path / "d", "breast", n=SIZES)
    path.write_bytes(path.read_bytes()[:300])
    failed = launch(command(tmp_path / "d", tmp_path / "r", "--devices", 2))
    assert_one_line_error(failed, str(path), "corrupt or truncated", code=3)
    written = [p for p in (tmp_path / "r").rglob("*") if p.is_file()] if (tmp_path / "r").exists() else []
    assert written == []  # no row, no checkpoint, no lock left behind (the run lock's empty folder may remain)
