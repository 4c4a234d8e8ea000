"""A run records the data folder it read, so that `evaluate` and Grad-CAM find the data after `make demo` (where
MEDBOOST_DATA was set only inside make); --data-dir and MEDBOOST_DATA still name another folder."""

from __future__ import annotations

import shutil

import pytest

from medboost_cli.engine import evaluate_run, train
from medboost_cli.errors import DataError
from medboost_cli.recipes import load_recipe

from .conftest import TINY_SETS, write_medmnist
from .test_cli import run


@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDBOOST_DATA", raising=False)
    data = tmp_path / "data"
    write_medmnist(data, "breast")
    recipe = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "none")],
                         sets=TINY_SETS + ["train.epochs=1"])
    row = train(recipe, data, tmp_path / "results", log=lambda message: None)
    return row, data, tmp_path / "results"


def test_evaluate_reads_the_folder_the_run_was_trained_on(trained, tmp_path, monkeypatch):
    row, data, results = trained
    assert row["data_dir"] == str(data.resolve())
    out = evaluate_run(row["run_id"], results)  # no folder named: the recorded one
    assert out["auc"] == pytest.approx(row["test_auc"])
    shown = run("evaluate", row["run_id"], "--results-dir", results)  # the command line, as after `make demo`
    assert shown.returncode == 0 and row["run_id"] in shown.stdout, shown.stderr
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data, elsewhere)
    (data / "breastmnist.npz").unlink()
    assert evaluate_run(row["run_id"], results, elsewhere)["auc"] == pytest.approx(row["test_auc"])  # named wins
    monkeypatch.setenv("MEDBOOST_DATA", str(elsewhere))
    assert run("evaluate", row["run_id"], "--results-dir", results).returncode == 0


def test_a_recorded_folder_that_is_gone_falls_back_to_the_default(trained, tmp_path, monkeypatch):
    row, data, results = trained
    shutil.rmtree(data)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # medboost's default folder, ~/.medmnist, is empty here
    with pytest.raises(DataError, match="data file not found"):
        evaluate_run(row["run_id"], results)
