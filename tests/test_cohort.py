"""Cohort files as tasks: `medboost prepare dicom` -> `medboost train cohort.npz --folds K` (one run per
patient-level fold, sens/spec and fold columns in each row, mean ± std over folds) -> `medboost report`; run ids
that tell folds apart and keep a fold's run the same; and the keys' errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medboost_cli import cohort as cohort_mod
from medboost_cli import results
from medboost_cli.cohort_file import load_cohort
from medboost_cli.data import load_dataset
from medboost_cli.folds import patient_folds
from medboost_cli.metrics import binary_report
from medboost_cli.recipes import load_recipe

from .conftest import TINY_SETS
from .dicom_fixtures import write_cohort
from .test_cli import assert_one_line_error, run

# 16 patients: 2 folds of 8, each fold's 8 training patients give a 1/4 validation split of 2.
FOLD_SETS = [a for s in TINY_SETS + ["train.epochs=1", "data.val_fraction=0.25"] for a in ("--set", s)]


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory):
    """A 16-patient cohort prepared by the CLI at 28x28."""
    root = tmp_path_factory.mktemp("cohort")
    made = write_cohort(root, n_patients=16, bad_files=False)
    result = run("prepare", "dicom", made.folder, "--labels", made.labels_csv, "--out", root / "cohort.npz",
                 "--size", "28")
    assert result.returncode == 0, result.stderr
    return root / "cohort.npz"


def _recipe(path, *flags, sets=()):
    return load_recipe(str(path), preset="cpu", flags=list(flags), sets=list(sets))


def test_train_folds_end_to_end_then_report(cohort_file, tmp_path):
    out = tmp_path / "results"
    args = ("train", cohort_file, "--folds", "2", "--preset", "cpu", "--results-dir", out, "--quiet", *FOLD_SETS)
    result = run(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["fold", "0/2"], ["fold", "1/2"]]
    assert lines[2].startswith("mean ± std over 2 folds: Sens ") and " AVG " in lines[2]

    rows = results.load_results(out, status="completed").sort_values("fold").to_dict("records")
    assert [(r["fold"], r["folds"], r["task"]) for r in rows] == [(0, 2, "cohort"), (1, 2, "cohort")]
    assert rows[0]["run_id"] != rows[1]["run_id"]
    data = load_cohort(cohort_file)
    every = patient_folds(data.labels, data.patient_ids, k=2, seed=0, val_fraction=0.25)
    for row, fold in zip(rows, every):
        labels, scores = np.array(row["test_labels"].tolist()), np.array(row["test_scores"].tolist())
        assert np.array_equal(labels, data.labels[fold.test])  # the row scored exactly that fold's test patients
        report = binary_report(labels, scores)
        assert (row["test_sens"], row["test_spec"]) == pytest.approx((report["sens"], report["spec"]), nan_ok=True)
        owners = [set(data.patient_ids[fold.split(s)]) for s in ("train", "val", "test")]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    summary = cohort_mod.fold_summary(rows)
    assert f"Acc {summary['Acc'][0]:.2f} ± {summary['Acc'][1]:.2f}" in lines[2]

    again = run(*args)  # both folds are done: nothing is trained again, the same summary is printed
    assert again.returncode == 0 and again.stdout == result.stdout, again.stderr
    assert again.stderr.count("already completed") == 2

    report = run("report", "--results-dir", out, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "data.folds=2" in text and "data.fold=1" in text  # both folds, in the table of runs outside the studies
    cv = [line for line in text.splitlines() if line.startswith("| cohort | ViT-mini | rllm | 0 | 2 of 2 |")]
    assert len(cv) == 1  # the two folds, one cross-validation: the CLI's mean ± std
    assert cv[0].removesuffix(" |").split(" | ")[5:] == [f"{m:.2f} ± {s:.2f}" for m, s in summary.values()]


def test_one_pneumollm_fold(cohort_file, tmp_path):
    out = tmp_path / "results"
    result = run("train", cohort_file, "--model", "pneumollm", "--folds", "2", "--fold", "1", "--preset", "cpu",
                 "--results-dir", out, "--quiet", "--json", *FOLD_SETS)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert (row["status"], row["booster"], row["fold"], row["folds"]) == ("completed", "pneumollm", 1, 2)
    assert row["test_sens"] is not None and row["test_spec"] is not None


def test_a_fold_and_seed_name_one_run_and_the_folds_do_not_follow_the_seed(cohort_file, tmp_path):
    seed, folds = ("--seed", "seed", 3), ("--folds", "data.folds", 2)
    fold0 = _recipe(cohort_file, seed, folds, ("--fold", "data.fold", 0))
    assert fold0.run_id() == _recipe(cohort_file, seed, folds, ("--fold", "data.fold", 0)).run_id()
    fold1 = _recipe(cohort_file, seed, folds, ("--fold", "data.fold", 1))
    assert fold1.run_id() != fold0.run_id() and fold1.run_id().startswith("cohort-") and fold1.run_id().endswith("-s3")
    assert _recipe(cohort_file, seed, ("--folds", "data.folds", 3)).run_id() != fold0.run_id()
    other_folds = _recipe(cohort_file, seed, folds, sets=["data.fold_seed=1"])
    assert other_folds.run_id() != fold0.run_id()

    # the same file elsewhere is the same experiment; another file (other content) is not
    copy = tmp_path / "cohort.npz"
    shutil.copy(cohort_file, copy)
    assert _recipe(copy, seed, folds).run_id() == fold0.run_id()
    with np.load(cohort_file) as npz:
        arrays = dict(npz)
    arrays["labels"] = 1 - arrays["labels"]
    np.savez_compressed(copy, **arrays)
    assert _recipe(copy, seed, folds).run_id() != fold0.run_id()

    # every training seed trains and tests on the same patients (data.fold_seed, not seed)
    def splits(recipe):
        data = load_dataset(recipe.task_info, recipe.data.size, tmp_path, select_metric="auc")
        return [data.splits[s].images.numpy() for s in ("train", "val", "test")]

    for a, b in zip(splits(fold0), splits(_recipe(cohort_file, ("--seed", "seed", 4), folds))):
        assert np.array_equal(a, b)
    assert not np.array_equal(splits(fold0)[2], splits(fold1)[2])


def test_a_cohort_task_takes_its_size_and_classes_from_the_file(cohort_file):
    recipe = _recipe(cohort_file, ("--folds", "data.folds", 2), ("--model", "model", "pneumollm"))
    task = recipe.task_info
    assert recipe.data.size == 28 and task.sizes == (28,)  # the file's, though pneumollm's recipe says 224
    assert (task.task_type, task.n_classes, task.n_channels, task.dims) == ("binary-class", 2, 1, 2)
    assert task.cohort.k == 2 and task.cohort.path == cohort_file.resolve()


@pytest.mark.parametrize("args, fragments, code", [
    (["breast", "--set", "data.folds=5"], ["data.folds=5 applies to cohort files", "unset it"], 2),
    (["{c}", "--set", "data.folds=null"], ["is a cohort file", "give --folds K"], 2),
    (["{c}", "--folds", "2", "--fold", "2"], ["data.fold=2", "2 folds (0 to 1)"], 2),
    (["{c}", "--folds", "2", "--set", "data.size=64"], ["data.size=64", "holds 28x28 images"], 2),
    (["{missing}", "--folds", "2"], ["cohort file not found", "medboost prepare dicom"], 3),
])
def test_bad_fold_settings_are_one_line_errors(cohort_file, tmp_path, args, fragments, code):
    args = [a.format(c=cohort_file, missing=tmp_path / "none.npz") for a in args]
    result = run("train", *args, "--preset", "cpu", "--results-dir", tmp_path, "--data-dir", tmp_path)
    assert_one_line_error(result, *fragments, code=code)
    assert not (tmp_path / "runs").exists()


def test_sens_spec_follow_from_binary_scores_only():
    binary = results.new_row(run_id="a-b-c-d-s0", test_labels=[[1], [0], [1]], test_scores=[[0.2, 0.8], [0.3, 0.7],
                                                                                           [0.9, 0.1]])
    assert (binary["test_sens"], binary["test_spec"]) == (0.5, 0.0)
    three = results.new_row(run_id="a-b-c-d-s0", test_labels=[[2]], test_scores=[[0.2, 0.3, 0.5]])
    assert three["test_sens"] is None and three["fold"] is None


def test_rows_of_schema_2_read_without_the_new_columns(tmp_path):
    row = results.new_row(run_id="breast-vit-mini-rllm-00000000-s0", status="completed", test_labels=[[1]],
                          test_scores=[[0.4, 0.6]])
    old = {k: v for k, v in row.items() if k not in results.ADDED_AFTER_V2} | {"schema_version": 2}
    (tmp_path / "runs").mkdir()
    pq.write_table(pa.Table.from_pylist([old]), tmp_path / "runs" / f"{row['run_id']}.parquet")
    df = results.load_results(tmp_path)
    assert list(df.columns) == results.COLUMNS and df.loc[0, "test_sens"] is None and df.loc[0, "fold"] is None
    assert results.read_row(tmp_path, row["run_id"])["test_spec"] is None


def test_fold_summary_is_mean_and_sample_std_in_percent_with_avg_per_fold():
    rows = [{"test_sens": 0.8, "test_spec": 0.6, "test_acc": 0.7, "test_auc": 0.9},
            {"test_sens": 0.6, "test_spec": 0.8, "test_acc": 0.7, "test_auc": 0.7}]
    summary = cohort_mod.fold_summary(rows)
    assert summary["Sens"] == pytest.approx((70.0, np.std([80, 60], ddof=1)))
    assert summary["Acc"] == pytest.approx((70.0, 0.0))
    assert summary["AVG"] == pytest.approx((72.5, np.std([75, 70], ddof=1)))
    assert list(cohort_mod.fold_summary([{"test_acc": 0.5, "test_auc": 0.6, "test_sens": None}])) == ["Acc", "AUC"]
