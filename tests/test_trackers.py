"""Experiment trackers (medboost_cli/trackers.py): tiny runs logged to TensorBoard, MLflow and W&B, read back with
each tracker's own reader and compared with the results row; resume; a failing tracker; the --track option.

Nothing leaves the machine: W&B is offline (its folders, cache and config in tmp), MLflow writes a file store in
tmp with its telemetry off, and conftest's _no_network fails any connection from this process.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medboost_cli import engine
from medboost_cli.engine import train
from medboost_cli.recipes import load_recipe
from medboost_cli.trackers import MlflowTracker, TensorBoardTracker, make_reporter, resolve_tracks

from .conftest import TINY_SETS, write_medmnist
from .test_cli import assert_one_line_error, run
from .test_engine import InterruptAfter  # used as the progress display: the trackers see each epoch first

ALL = ["tensorboard", "wandb", "mlflow"]


def quiet(*args):
    pass


def tiny(*sets):
    return load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "none")],
                       sets=TINY_SETS + list(sets))


def offline_env(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """W&B offline and quiet, its state in ``tmp``; MLflow's telemetry off; no user setting of ours or theirs."""
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(name, str(tmp / "wandb-home" / name.lower()))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.setenv("DO_NOT_TRACK", "true")
    for name in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MEDBOOST_TRACK",
                 "MLFLOW_ALLOW_FILE_STORE"):
        mp.setenv(name, "")  # so that undo() restores the variable's absence after the tracker set it
        mp.delenv(name)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline_env(monkeypatch, tmp_path)


def tracked(recipe, data_dir, results, tracks, resume=False, progress=None, log=quiet):
    return train(recipe, data_dir, results, resume=resume,
                 reporter=make_reporter(recipe, results, tracks, progress, log=log), log=quiet)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One tiny 2-epoch run logged to all three trackers at once."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        offline_env(mp, root)
        write_medmnist(root / "d", "breast")
        row = tracked(tiny(), root / "d", root / "r", resolve_tracks(ALL))
    return root / "r", row


# -------------------------------------------------------------------------------------- the readers


def tensorboard_scalars(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], object]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def mlflow_client(results: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(results / "mlruns").resolve().as_uri())


def mlflow_runs(results: Path, run_id: str):
    client = mlflow_client(results)
    experiment = client.get_experiment_by_name("medboost")
    return client, client.search_runs([experiment.experiment_id], f"attributes.run_name = '{run_id}'")


def wandb_records(path: Path):
    """The records of a W&B transaction log (``run-ID.wandb``), decoded with W&B's own protobuf schema. The file is
    a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records: crc32 u32, length u16, type u8, data),
    which W&B's Python package no longer reads itself (wandb-core does)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's last bytes too few for a record header are padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_offline_runs(results: Path, run_id: str) -> list[dict]:
    """Each offline-run folder of ``run_id`` (oldest first) as its run record, config, history rows, summary, exit."""
    out = []
    for folder in sorted((results / "wandb").glob(f"offline-run-*-{run_id}-*")):
        (log,) = folder.glob("*.wandb")
        run = {"folder": folder, "history": [], "summary": {}, "exit": None}
        for r in wandb_records(log):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run["run"] = r.run
                run["config"] = {i.key: json.loads(i.value_json) for i in r.run.config.update}
            elif kind == "history":
                run["history"].append(_items(r.history.item))
            elif kind == "summary":
                run["summary"].update(_items(r.summary.update))
            elif kind == "exit":
                run["exit"] = r.exit.exit_code
        out.append(run)
    return out


def _items(items) -> dict:
    return {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in items}


def epochs_of(row) -> list[dict]:
    return json.loads(row["history_json"])


# ------------------------------------------------------------------------------- what each one holds


def test_tensorboard_holds_the_rows_numbers(tracked_run):
    results, row = tracked_run
    scalars, acc = tensorboard_scalars(results / "tb" / row["run_id"])
    history = epochs_of(row)
    def f32(values):  # TensorBoard stores float32
        return [float(np.float32(v)) for v in values]

    for tag, key in (("train/loss", "train_loss"), ("train/lr", "lr"), ("train/epoch_seconds", "seconds"),
                     ("val/loss", "val_loss"), ("val/acc", "val_acc"), ("val/auc", "val_auc")):
        assert scalars[tag] == list(zip([0, 1], f32(h[key] for h in history))), tag
    for tag, key in (("test/auc", "test_auc"), ("test/acc", "test_acc"), ("best/val_auc", "val_auc"),
                     ("run/params_total", "params_total"), ("run/params_trainable", "params_trainable"),
                     ("run/train_seconds", "train_seconds"), ("run/peak_memory_mb", "peak_memory_mb")):
        assert scalars[tag] == [(row["best_epoch"], *f32([row[key]]))], tag
    recipe = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(recipe) == json.loads(row["config_json"])
    tags = acc.Tensors("tags/text_summary")[0].tensor_proto.string_val[0].decode()
    assert tags == "task: breast, booster: none, backbone: vit-mini, seed: 0"
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["run_id"].string_value == row["run_id"]
    assert start.hparams["train.lr"].number_value == json.loads(row["config_json"])["train"]["lr"]


def test_mlflow_holds_the_rows_numbers(tracked_run):
    results, row = tracked_run
    client, (found,) = mlflow_runs(results, row["run_id"])
    assert found.info.status == "FINISHED"
    assert {k: found.data.tags[k] for k in ("task", "booster", "backbone", "seed", "medboost.run_id")} == {
        "task": "breast", "booster": "none", "backbone": "vit-mini", "seed": "0", "medboost.run_id": row["run_id"]}
    config = json.loads(row["config_json"])
    assert found.data.params["train.lr"] == str(config["train"]["lr"]) and found.data.params["seed"] == "0"
    history = epochs_of(row)
    for name, key in (("train/loss", "train_loss"), ("train/lr", "lr"), ("val/auc", "val_auc"), ("val/acc", "val_acc"),
                      ("train/epoch_seconds", "seconds")):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, name))
        assert logged == [(h["epoch"], h[key]) for h in history], name
    for name, key in (("test/auc", "test_auc"), ("test/acc", "test_acc"), ("run/params_total", "params_total"),
                      ("run/train_seconds", "train_seconds"), ("run/peak_memory_mb", "peak_memory_mb")):
        assert found.data.metrics[name] == row[key], name
    recipe = Path(client.download_artifacts(found.info.run_id, "recipe.json", str(results.parent / "dl")))
    assert json.loads(recipe.read_text()) == config


def test_wandb_offline_run_holds_the_rows_numbers(tracked_run):
    results, row = tracked_run
    (run,) = wandb_offline_runs(results, row["run_id"])
    assert run["run"].display_name == row["run_id"] and run["run"].project == "medboost"
    assert list(run["run"].tags) == ["task:breast", "booster:none", "backbone:vit-mini", "seed:0"]
    config = json.loads(row["config_json"])
    assert {k: run["config"][k] for k in config} == config and run["config"]["run_id"] == row["run_id"]
    logged = [{k: h[k] for k in ("_step", "train/loss", "train/lr", "val/auc", "val/loss")} for h in run["history"]]
    assert logged == [{"_step": h["epoch"], "train/loss": h["train_loss"], "train/lr": h["lr"], "val/auc": h["val_auc"],
                       "val/loss": h["val_loss"]} for h in epochs_of(row)]
    for name, key in (("test/auc", "test_auc"), ("test/acc", "test_acc"), ("run/params_trainable", "params_trainable"),
                      ("run/train_seconds", "train_seconds"), ("run/peak_memory_mb", "peak_memory_mb")):
        assert run["summary"][name] == row[key], name
    assert run["summary"]["status"] == "completed" and run["exit"] == 0


# ------------------------------------------------------------------------------------------ resume


def test_a_resumed_run_continues_its_tracker_runs(tmp_path, data_dir):
    """Interrupted after 2 of 3 epochs with TensorBoard and W&B, resumed with MLflow as well: each tracker ends with
    epochs 0-2 once, in one run (MLflow's created on resume gets the first two epochs from the row's history)."""
    recipe, results = tiny("train.epochs=3"), tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        tracked(recipe, data_dir, results, ["tensorboard", "wandb"], progress=InterruptAfter(2))
    row = tracked(recipe, data_dir, results, ALL, resume=True)
    assert row["status"] == "completed"
    history, run_id = epochs_of(row), row["run_id"]
    want = [(h["epoch"], h["train_loss"]) for h in history]
    assert [h["epoch"] for h in history] == [0, 1, 2]

    scalars, _ = tensorboard_scalars(results / "tb" / run_id)  # the one folder, events of both starts
    assert len(list((results / "tb" / run_id).glob("events.*"))) == 2
    assert scalars["train/loss"] == [(e, float(np.float32(v))) for e, v in want]

    first, second = wandb_offline_runs(results, run_id)  # one offline folder per start, with the same W&B id
    assert first["run"].run_id == second["run"].run_id and first["exit"] == 1 and second["exit"] == 0
    assert first["summary"]["status"] == "interrupted" and second["summary"]["test/auc"] == row["test_auc"]
    assert [(h["_step"], h["train/loss"]) for h in first["history"] + second["history"]] == want

    client, (found,) = mlflow_runs(results, run_id)
    assert sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, "train/loss")) == want
    assert found.info.status == "FINISHED" and found.data.metrics["test/auc"] == row["test_auc"]

    again = tracked(recipe, data_dir, results, ALL, resume=True)  # completed: nothing is logged
    assert again["test_auc"] == row["test_auc"] and len(wandb_offline_runs(results, run_id)) == 2


def test_mlflow_continues_the_same_run_and_a_forced_rerun_starts_another(tmp_path, data_dir):
    recipe, results = tiny("train.epochs=3"), tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        tracked(recipe, data_dir, results, ["mlflow"], progress=InterruptAfter(1))
    _, (interrupted,) = mlflow_runs(results, recipe.run_id())
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["medboost.status"] == "interrupted"
    tracked(recipe, data_dir, results, ["mlflow"], resume=True)
    _, (resumed,) = mlflow_runs(results, recipe.run_id())
    assert resumed.info.run_id == interrupted.info.run_id and resumed.info.status == "FINISHED"
    while engine._now() == resumed.data.tags["medboost.started_at"]:  # attempts are told apart by the second
        time.sleep(0.1)
    train(recipe, data_dir, results, force=True, reporter=make_reporter(recipe, results, ["mlflow"]), log=quiet)
    _, runs = mlflow_runs(results, recipe.run_id())
    assert len(runs) == 2 and len({r.data.tags["medboost.started_at"] for r in runs}) == 2


# ------------------------------------------------------------------------------------------ failures


def test_a_failed_run_ends_its_tracker_runs_as_failed(tmp_path, data_dir, monkeypatch):
    def out_of_memory(self, epoch, reporter):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(engine.Run, "train_epoch", out_of_memory)
    recipe, results = tiny(), tmp_path / "r"
    with pytest.raises(RuntimeError):
        tracked(recipe, data_dir, results, ALL)
    run_id = recipe.run_id()
    _, (found,) = mlflow_runs(results, run_id)
    assert found.info.status == "FAILED" and "CUDA out of memory" in found.data.tags["medboost.error"]
    assert "test/auc" not in found.data.metrics and found.data.metrics["run/epochs_done"] == 0
    (run,) = wandb_offline_runs(results, run_id)
    assert run["exit"] == 1 and run["summary"]["status"] == "failed" and run["history"] == []
    scalars, _ = tensorboard_scalars(results / "tb" / run_id)
    assert "test/auc" not in scalars and scalars["run/params_total"][0][0] == 0




def test_a_failing_tracker_warns_once_and_never_costs_the_result(tmp_path, data_dir, monkeypatch):
    def broken(self, metrics, step):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "_log", broken)
    warnings = []
    recipe, results = tiny(), tmp_path / "r"
    row = tracked(recipe, data_dir, results, ["tensorboard", "mlflow"], log=warnings.append)
    assert row["status"] == "completed" and (results / "runs" / f"{row['run_id']}.parquet").is_file()
    (line,) = warnings
    assert "TensorBoard" in line and "No space left on device" in line and "\n" not in line
    _, (found,) = mlflow_runs(results, row["run_id"])  # the other tracker is unaffected
    assert found.data.metrics["test/auc"] == row["test_auc"] and found.info.status == "FINISHED"


def test_a_tracker_that_cannot_start_is_left_out(tmp_path, data_dir, monkeypatch):
    def unreachable(self, first_epoch):
        raise ConnectionError("mlflow server at http://10.0.0.1:5000 unreachable")

    monkeypatch.setattr(MlflowTracker, "_open", unreachable)
    warnings = []
    row = tracked(tiny(), data_dir, tmp_path / "r", ["mlflow", "tensorboard"], log=warnings.append)
    assert row["status"] == "completed" and len(warnings) == 1 and "MLflow" in warnings[0]
    scalars, _ = tensorboard_scalars(tmp_path / "r" / "tb" / row["run_id"])
    assert scalars["test/auc"][0][1] == float(np.float32(row["test_auc"]))


# ------------------------------------------------------------------------------------------ the CLI


def test_track_option_logs_through_the_command(tmp_path):
    write_medmnist(tmp_path / "d", "breast")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    r = run("train", "breast", "--booster", "none", "--preset", "cpu", *sets, "--data-dir", tmp_path / "d",
            "--results-dir", tmp_path / "r", "--track", "tensorboard", "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    scalars, _ = tensorboard_scalars(tmp_path / "r" / "tb" / row["run_id"])
    assert [s for s, _ in scalars["val/auc"]] == [0, 1]
    assert scalars["test/acc"] == [(row["best_epoch"], float(np.float32(row["test_acc"])))]


def test_track_choices_and_missing_packages_are_one_line_errors(tmp_path, monkeypatch):
    args = ("train", "breast", "--preset", "cpu", "--results-dir", tmp_path)
    assert_one_line_error(run(*args, "--track", "comet"), "--track comet", "tensorboard, wandb, mlflow", code=2)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    assert_one_line_error(run(*args, "--track", "mlflow,wandb"), "--track wandb needs `pip install medboost[wandb]`",
                          code=2)
    monkeypatch.setenv("MEDBOOST_TRACK", "tensorboard,neptune")
    assert_one_line_error(run(*args), "MEDBOOST_TRACK=neptune", code=2)
    assert resolve_tracks(["tensorboard"]) == ["tensorboard"]  # the option wins over the variable
    monkeypatch.setenv("MEDBOOST_TRACK", " MLflow, tensorboard,mlflow")
    assert resolve_tracks([]) == ["mlflow", "tensorboard"]
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_ablate_gives_each_run_its_trackers(tmp_path, monkeypatch):
    from medboost_cli import engine

    seen = []

    def fake_train(recipe, data_dir, results_dir, resume=False, reporter=None, log=print):
        seen.append((recipe.run_id(), reporter))
        raise SystemExit(0)

    monkeypatch.setattr(engine, "train", fake_train)
    r = run("ablate", "residual", "--tasks", "adrenal3d", "--preset", "cpu", "--seeds", "1", "--results-dir", tmp_path,
            "--track", "tensorboard", "--track", "mlflow", "--quiet")
    assert r.returncode == 0, r.stderr
    ((run_id, reporter),) = seen
    assert [(type(t).__name__, t.run_id) for t in reporter.trackers] == [
        ("TensorBoardTracker", run_id), ("MlflowTracker", run_id)]
