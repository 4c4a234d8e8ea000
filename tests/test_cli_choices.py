"""The CLI without surprises: `runs` columns and JSON, names that are choices with "did you mean", epoch ETAs."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from medboost_cli.progress import RichReporter, eta_text
from medboost_cli.results import new_row, write_row

from .test_cli import assert_one_line_error, run


def _rows(folder):
    write_row(folder, new_row(run_id="breast-vit-mini-rllm-0000aaaa-s0", status="completed", task="breast",
                              backbone="vit-mini", booster="rllm", seed=0, best_epoch=0, test_auc=0.8125))
    write_row(folder, new_row(run_id="adrenal3d-vit3d-none-0000bbbb-s1", status="failed", task="adrenal3d",
                              backbone="vit3d", booster="none", seed=1, best_epoch=None))


def test_runs_shows_what_tells_runs_apart_and_counts_best_epoch_from_one(tmp_path):
    _rows(tmp_path)
    table = run("runs", "--results-dir", tmp_path)
    assert table.returncode == 0, table.stderr
    for column in ("task", "backbone", "booster", "seed", "status", "best_epoch"):
        assert column in table.stdout
    assert "vit-mini" in table.stdout and "adrenal3d" in table.stdout and "failed" in table.stdout
    records = json.loads(run("runs", "--results-dir", tmp_path, "--json").stdout)
    assert isinstance(records, list) and len(records) == 2  # an array, one object per run, as --help says
    by_id = {r["run_id"]: r for r in records}
    assert by_id["breast-vit-mini-rllm-0000aaaa-s0"]["best_epoch"] == 1  # stored 0: the first epoch
    assert by_id["adrenal3d-vit3d-none-0000bbbb-s1"]["best_epoch"] is None
    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", run("runs", "--help").stdout).split())
    assert "a JSON array with one object per run" in help_text and "best_epoch counted from 1" in help_text


@pytest.mark.parametrize("args, listed, suggestion", [
    (["runs", "--status", "complted"], "'running', 'completed', 'failed', 'interrupted'", "completed"),
    (["train", "breast", "--preset", "cpx"], "'cpu'", "cpu"),
    (["ablate", "residual", "--preset", "cpux", "--dry-run"], "'cpu'", "cpu"),
    (["evaluate", "x", "--split", "tset"], "'val', 'test'", "test"),
])
def test_names_are_choices_with_did_you_mean(tmp_path, args, listed, suggestion):
    result = run(*args, "--results-dir", tmp_path)
    assert_one_line_error(result, f"is not one of {listed}", f"(did you mean '{suggestion}'?)", code=2)


def test_help_lists_the_choices():
    runs = run("runs", "--help").stdout
    assert "<running|completed|failed|" in runs and "interrupted>" in runs
    assert "<cpu>" in run("ablate", "--help").stdout and "<cpu>" in run("train", "--help").stdout
    assert "val|test" in run("evaluate", "--help").stdout


def test_epoch_lines_show_an_eta():
    assert eta_text([10.0, 20.0], 3) == "0:45" and eta_text([1800.0], 3) == "1:30:00" and eta_text([], 2) == "0:00"
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=200, force_terminal=False))
    reporter.start("run", 4, 2, 0)
    for epoch in range(2):
        reporter.epoch({"epoch": epoch, "val_auc": 0.7, "val_acc": 0.6, "best_epoch": 0, "train_loss": 0.5,
                        "val_loss": 0.6, "seconds": 30.0})
    reporter.close()
    lines = [l for l in out.getvalue().splitlines() if l.startswith("epoch ")]
    assert "(30.0s, ETA 1:30)" in lines[0] and "(30.0s, ETA 1:00)" in lines[1]


def test_ablate_seeds_take_a_count_a_list_or_a_range(tmp_path):
    def seeds(value):
        result = run("ablate", "residual", "--tasks", "adrenal3d", "--preset", "cpu", "--seeds", value, "--dry-run",
                     "--results-dir", tmp_path)
        assert result.returncode == 0, result.stderr
        return sorted({int(l.split("--seed ")[1].split()[0]) for l in result.stdout.splitlines() if "--seed " in l})

    assert seeds("2") == [0, 1] and seeds("0,2") == [0, 2] and seeds("3-5") == [3, 4, 5] and seeds("1,4-5") == [1, 4, 5]
    assert_one_line_error(run("ablate", "residual", "--seeds", "2-x", "--dry-run", "--results-dir", tmp_path),
                          "--seeds 2-x: give a count", code=2)


def test_ablate_tasks_take_a_list_or_the_option_repeated(tmp_path):
    def tasks(*words):
        result = run("ablate", "main2d", *words, "--preset", "cpu", "--seeds", "1", "--dry-run",
                     "--results-dir", tmp_path)
        assert result.returncode == 0, result.stderr
        return [l.split("train ")[1].split()[0] for l in result.stdout.splitlines() if l.startswith("todo")]

    listed = tasks("--tasks", "breast,pneumonia")
    assert listed == tasks("--tasks", "breast", "--tasks", "pneumonia") and set(listed) == {"breast", "pneumonia"}
    assert_one_line_error(run("ablate", "main2d", "--tasks", "breast,lung", "--preset", "cpu", "--dry-run",
                              "--results-dir", tmp_path), "unknown task 'lung'", code=2)


def test_train_print_config_prints_the_resolved_recipe_and_trains_nothing(tmp_path):
    import yaml

    from medboost_cli.recipes import load_recipe

    result = run("train", "breast", "--preset", "cpu", "--epochs", "3", "--set", "train.lr=0.002", "--print-config",
                 "--results-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["epochs"] == 3 and printed["train"]["lr"] == 0.002 and printed["backbone"]["name"] == "vit-mini"
    recipe = load_recipe("breast", preset="cpu", flags=[("--epochs", "train.epochs", 3)], sets=["train.lr=0.002"])
    assert result.stdout.startswith(f"# run id: {recipe.run_id()}\n")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_bench_takes_batch_size_like_train():
    help_text = run("bench", "--help").stdout
    assert "--batch-size" in help_text and "--batch" in help_text
