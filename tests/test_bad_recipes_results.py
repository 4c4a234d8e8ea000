"""Bad recipes and bad results, as classes: each ends in one clear line and its class's exit code, never a
traceback, and nothing in the results folder changes.

Recipes, presets and studies (exit 2, ConfigError): a folder or a binary file given as a recipe, YAML that is
not a mapping, ``extends`` loops (also through ``..``) and endless chains, seeds outside 0 <= seed < 2**32,
wrong-typed values, unknown keys, studies with unknown keys, variants or tasks.

Results (exit 5, ResultsError): run files that are not sound rows (unreadable, empty, zero rows, foreign
columns, an unknown recipe key, a copy of another run, a wrong name, short or NaN scores). Commands over many
runs (``runs``, ``report``) skip such a file with one ``results warning:`` line naming it and go on with the
rest; commands about one run (``evaluate``, ``report gradcam``, ``train`` over an existing row) fail.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medboost_cli.results import bulk as results_bulk
from medboost_cli.recipes import load_recipe, recipes_dir
from medboost_cli.results import write_row

from .report_fixtures import fabricate
from .test_cli import assert_one_line_error, run


@pytest.fixture(scope="module")
def valid_results(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Four completed rows (the residual study on adrenal3d, one seed) and a checkpoint file beside them."""
    root = tmp_path_factory.mktemp("valid") / "results"
    rows = fabricate(root, "residual", tasks=["adrenal3d"], seeds=1, n_test=50)
    best = root / "checkpoints" / rows[0]["run_id"] / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights that must stay as they are")
    return root, rows


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def results(tmp_path, valid_results) -> tuple[Path, list[dict]]:
    root, rows = valid_results
    shutil.copytree(root, tmp_path / "results")
    return tmp_path / "results", rows


# ------------------------------------------------------------------------------------------------ recipes


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _recipe(tmp: Path, name: str, text: str | bytes) -> list[str]:
    return ["train", "breast", "--preset", "cpu", "--recipe", _write(tmp / name, text)]


def _loop_through_dotdot(tmp: Path) -> list[str]:
    _write(tmp / "x" / "b.yaml", "extends: ../y/a.yaml\n")
    return ["train", "breast", "--recipe", _write(tmp / "y" / "a.yaml", "extends: ../x/b.yaml\n")]


def _deep_chain(tmp: Path) -> list[str]:
    for i in range(40):
        _write(tmp / f"deep{i}.yaml", f"extends: deep{i + 1}.yaml\n" if i < 39 else "task: breastmnist\n")
    return ["train", "breast", "--recipe", tmp / "deep0.yaml"]


def _study(tmp: Path, text: str, monkeypatch) -> list[str]:
    """A copy of the recipes with one more study, ``bad``."""
    shutil.copytree(recipes_dir(), tmp / "recipes")
    _write(tmp / "recipes" / "studies" / "bad.yaml", text)
    monkeypatch.setenv("MEDBOOST_RECIPES", str(tmp / "recipes"))
    return ["ablate", "bad", "--dry-run", "--seeds", "1", "--preset", "cpu"]


GOOD_STUDY = "title: t\ntasks: [breast]\nvariants: {none: {booster: none}, rllm: {booster: rllm}}\n"
TRAIN = ["train", "breast", "--preset", "cpu"]

# (id, CLI arguments made in a temporary folder, fragments of the one error line); all exit 2.
BAD_RECIPES: list[tuple[str, Callable, list[str]]] = [
    ("recipe-is-a-folder", lambda tmp, mp: TRAIN + ["--recipe", tmp],
     ["is a folder, not a recipe file"]),
    ("binary-recipe", lambda tmp, mp: _recipe(tmp, "bin.yaml", b"\xff\xfe\x00\x89PNG\x80garbage"),
     ["bin.yaml: not a text file (byte 0 is not UTF-8)"]),
    ("yaml-list", lambda tmp, mp: _recipe(tmp, "list.yaml", "- task\n- seed\n"),
     ["list.yaml: a recipe must be a mapping of keys to values, got list"]),
    ("yaml-scalar", lambda tmp, mp: _recipe(tmp, "str.yaml", "just words\n"),
     ["str.yaml: a recipe must be a mapping of keys to values, got str"]),
    ("yaml-nested-too-deeply", lambda tmp, mp: _recipe(tmp, "deep.yaml", "[" * 5000 + "]" * 5000),
     ["deep.yaml: nested too deeply to be a recipe"]),
    ("non-string-key", lambda tmp, mp: _recipe(tmp, "key.yaml", "1: 2\n"), ["key.yaml: key 1 is not a name"]),
    ("extends-itself", lambda tmp, mp: _recipe(tmp, "self.yaml", "extends: self.yaml\n"),
     ["self.yaml: 'extends' loops back to", "remove one of these 'extends'"]),
    ("extends-loop-through-dotdot", lambda tmp, mp: _loop_through_dotdot(tmp),
     ["a.yaml: 'extends' loops back to", "/y/a.yaml -> ", "/x/b.yaml -> "]),
    ("extends-chain-too-deep", lambda tmp, mp: _deep_chain(tmp), ["deep0.yaml: more than 16 files chained"]),
    ("extends-not-a-name", lambda tmp, mp: _recipe(tmp, "int.yaml", "extends: 5\n"),
     ["int.yaml: 'extends' must name a recipe file", "got 5"]),
    ("extends-missing-file", lambda tmp, mp: _recipe(tmp, "gone.yaml", "extends: nope.yaml\n"),
     ["gone.yaml: extends 'nope.yaml', which is neither beside it"]),
    ("extends-a-folder", lambda tmp, mp: _recipe(tmp, "dir.yaml", f"extends: {tmp}\n"),
     ["is a folder, not a recipe file"]),
    ("seed-flag-1e23", lambda tmp, mp: TRAIN + ["--seed", "1e23"],
     ["Invalid value for '--seed'", "medboost train --help"]),
    ("seed-set-1e23", lambda tmp, mp: TRAIN + ["--set", "seed=1e23"],
     ["--set seed=1e23: bad value for 'seed'", "0 <= seed < 2**32"]),
    ("seed-huge-int", lambda tmp, mp: TRAIN + ["--set", f"seed={10**23}"],
     [f"bad value for 'seed': {10**23}", "0 <= seed < 2**32"]),
    ("seed-2**32", lambda tmp, mp: TRAIN + ["--seed", str(2**32)], ["--seed 4294967296", "0 <= seed < 2**32"]),
    ("seed-negative", lambda tmp, mp: TRAIN + ["--seed", "-1"], ["--seed -1: bad value for 'seed'", "0 <= seed"]),
    ("seed-in-recipe-file", lambda tmp, mp: _recipe(tmp, "s.yaml", f"extends: {recipes_dir() / 'breast.yaml'}\n"
                                                                    "seed: -3\n"),
     ["s.yaml: bad value for 'seed': -3"]),
    ("epochs-not-a-number", lambda tmp, mp: TRAIN + ["--set", "train.epochs=abc"],
     ["--set train.epochs=abc: bad value for 'train.epochs': 'abc'"]),
    ("lr-infinite", lambda tmp, mp: TRAIN + ["--set", "train.lr=.inf"],
     ["bad value for 'train.lr': inf (Input should be a finite number)"]),
    ("scale-too-short", lambda tmp, mp: TRAIN + ["--set", "data.scale=[1]"],
     ["bad value for 'data.scale': [1] (too short: item 2 is missing)"]),
    ("unknown-key", lambda tmp, mp: TRAIN + ["--set", "train.epochz=3"],
     ["--set train.epochz=3: unknown key 'train.epochz'", "valid keys here: epochs"]),
    ("preset-outside-presets", lambda tmp, mp: TRAIN[:2] + ["--preset", "../breast"], ["Invalid value for '--preset': '../breast' is not one of 'cpu'"]),
    ("study-outside-studies", lambda tmp, mp: ["ablate", "../breast", "--dry-run"], ["unknown study '../breast'"]),
    ("study-unknown-key", lambda tmp, mp: _study(tmp, GOOD_STUDY + "colour: red\n", mp),
     ["bad.yaml: bad study key 'colour'"]),
    ("study-table-unknown-variant",
     lambda tmp, mp: _study(tmp, GOOD_STUDY + "tables: [{kind: ablation, caption: c, variants: [none, rlm]}]\n", mp),
     ["bad.yaml: bad study key 'tables.0.variants': 'rlm' is not one of its variants (none, rllm)"]),
    ("study-unknown-task", lambda tmp, mp: _study(tmp, GOOD_STUDY.replace("[breast]", "[lung]"), mp),
     ["bad.yaml: bad study key 'tasks': unknown task 'lung'"]),
    ("study-variant-unknown-key",
     lambda tmp, mp: _study(tmp, GOOD_STUDY.replace("{booster: rllm}", "{booster: rllm, set: [train.epochz=3]}"), mp),
     ["study 'bad', variant 'rllm' on breast: --set train.epochz=3: unknown key 'train.epochz'"]),
    ("study-binary", lambda tmp, mp: _study(tmp, b"\x00\xff\xfe", mp), ["bad.yaml: not a text file"]),
]


@pytest.mark.parametrize("make_args, fragments", [pytest.param(m, f, id=i) for i, m, f in BAD_RECIPES])
def test_a_bad_recipe_or_study_is_one_config_error_line(tmp_path, results, monkeypatch, make_args, fragments):
    folder, _ = results
    before = _snapshot(folder)
    (tmp_path / "in").mkdir()
    args = make_args(tmp_path / "in", monkeypatch)
    result = run(*args, "--results-dir", folder, "--data-dir", tmp_path / "no-data")
    assert_one_line_error(result, *fragments, code=2)
    assert _snapshot(folder) == before


def test_seeds_at_the_ends_of_the_range_are_accepted():
    assert load_recipe("breast", preset="cpu", flags=[("--seed", "seed", 2**32 - 1)]).seed == 2**32 - 1
    assert load_recipe("breast", preset="cpu", sets=["seed=0"]).seed == 0


def test_a_recipe_that_extends_through_dotdot_without_a_loop_loads(tmp_path):
    _write(tmp_path / "x" / "b.yaml", f"extends: {recipes_dir() / 'breast.yaml'}\ntrain: {{epochs: 3}}\n")
    _write(tmp_path / "y" / "a.yaml", "extends: ../x/b.yaml\nseed: 5\n")
    recipe = load_recipe("breast", recipe_file=tmp_path / "y" / "a.yaml")
    assert (recipe.train.epochs, recipe.seed) == (3, 5)


# ------------------------------------------------------------------------------------------------ results


def _parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _rewrite(folder: Path, row: dict, **changes) -> Path:
    """Replace a valid row with a damaged one (the snapshot is taken afterwards)."""
    return write_row(folder, {**row, **changes})


def _unknown_config_key(folder: Path, row: dict) -> Path:
    config = json.loads(row["config_json"])
    config["train"]["epochz"] = 3
    return _rewrite(folder, row, config_json=json.dumps(config))


def _copy(folder: Path, row: dict) -> Path:
    copy = folder / "runs" / f"{row['run_id']} (copy).parquet"
    shutil.copy(folder / "runs" / f"{row['run_id']}.parquet", copy)
    return copy


def _renamed(folder: Path, row: dict) -> Path:
    path = folder / "runs" / f"{row['run_id']}.parquet"
    return path.rename(path.with_name("breast-vit-mini-none-00000000-s0.parquet"))


@dataclass
class Bad:
    """A damaged results folder: ``damage`` makes the bad file (returns it); ``removes`` says whether it took one
    of the four valid rows out of the count (it damaged a row rather than adding a file)."""

    damage: Callable[[Path, dict], Path]
    problem: str
    removes: bool = False


BAD_FILES = {
    "zero-bytes": Bad(lambda f, r: _write(f / "runs" / "empty.parquet", b""),
                      "not a readable Parquet result (Parquet file size is 0 bytes)"),
    "corrupt": Bad(lambda f, r: _write(f / "runs" / "torn.parquet", b"PAR1" + bytes(100)),
                   "not a readable Parquet result"),
    "zero-rows": Bad(lambda f, r: _parquet(f / "runs" / "none.parquet", pa.Table.from_pylist([r]).slice(0, 0)),
                     "holds 0 rows where a run file holds one"),
    "two-rows": Bad(lambda f, r: _parquet(f / "runs" / "two.parquet", pa.Table.from_pylist([r, r])),
                    "holds 2 rows where a run file holds one"),
    "foreign-columns": Bad(lambda f, r: _parquet(f / "runs" / "sales.parquet", pa.table({"region": ["n"], "sum": [1]})),
                           "not a run row that medboost wrote (lacks run_id, status"),
    "newer-schema": Bad(lambda f, r: _rewrite(f, r, schema_version=99), "written by a newer medboost (row schema 99",
                        removes=True),
    "newer-schema-new-column": Bad(
        lambda f, r: _parquet(f / "runs" / f"{r['run_id']}.parquet",
                              pa.Table.from_pylist([{**r, "schema_version": 99, "added_in_99": 1}])),
        "written by a newer medboost (row schema 99", removes=True),
    "unknown-config-key": Bad(_unknown_config_key, "config_json has a recipe key this medboost does not know: "
                                                   "'train.epochz' = 3", removes=True),
    "unknown-status": Bad(lambda f, r: _rewrite(f, r, status="done"), "its status 'done' is none of", removes=True),
    "duplicate-run-id": Bad(_copy, "claims run adrenal3d-vivit-m-none-"),
    "name-not-run-id": Bad(_renamed, "but is named breast-vit-mini-none-00000000-s0.parquet; rename it to",
                           removes=True),
    "short-scores": Bad(lambda f, r: _rewrite(f, r, test_scores=r["test_scores"][:-5]),
                        "has 45 rows of test_scores for 50 test_labels", removes=True),
    "nan-scores": Bad(lambda f, r: _rewrite(f, r, test_scores=[[float("nan"), 0.5]] + r["test_scores"][1:]),
                      "1 of its test_scores are not finite numbers", removes=True),
    "scores-without-labels": Bad(lambda f, r: _rewrite(f, r, test_labels=None),
                                 "has test_scores but no test_labels", removes=True),
    "auc-as-text": Bad(lambda f, r: _rewrite(f, r, test_auc=str(r["test_auc"])),
                       "has columns of the wrong type (test_auc is string", removes=True),
    "flag-as-number": Bad(lambda f, r: _rewrite(f, r, frozen=1), "has columns of the wrong type (frozen is int64",
                          removes=True),
}
# The report reads rows through the same load_results as `runs`; it is slow, so it gets one case of each kind.
REPORT_CASES = ("corrupt", "foreign-columns", "short-scores", "auc-as-text")
# Single-run commands: training only reads the row of the run it trains (a damaged one, not an added file).
CASES = [pytest.param(case, command, id=f"{case}-{command}") for case, bad in BAD_FILES.items()
         for command in ("runs", "report", "evaluate", "gradcam", "train")
         if (command != "report" or case in REPORT_CASES) and (command != "train" or bad.removes)]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("results warning:")]


def _only_warning(result, bad: Path, problem: str) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and not re.search(r"^\S.* error: ", result.stderr, re.M), result.stderr
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"results warning: skipping {bad}: ") and problem in warnings[0], warnings[0]


@pytest.mark.parametrize("case, command", CASES)
def test_a_bad_results_file_is_skipped_with_one_line_over_many_runs_and_fails_one_run(tmp_path, results, case,
                                                                                       command, monkeypatch):
    """Over many runs (runs, report): a warning line naming the file, and the others counted; the folder is first
    read at once, which finds fault with that file and leaves it alone to be read on its own, which names it. About one run
    (evaluate, report gradcam, train): exit 5. Either way the folder is byte for byte as it was."""
    folder, rows = results
    bad_case = BAD_FILES[case]
    damaged = rows[0]
    bad = bad_case.damage(folder, damaged)
    before = _snapshot(folder)
    valid = [r["run_id"] for r in rows if not (bad_case.removes and r is damaged)]
    at_once, read_at_once = [], results_bulk.read_runs_at_once
    monkeypatch.setattr(results_bulk, "read_runs_at_once",
                        lambda files, columns: at_once.append(read_at_once(files, columns)) or at_once[-1])

    if command == "runs":
        result = run("runs", "--json", "--results-dir", folder)
        _only_warning(result, bad, bad_case.problem)
        assert sorted(r["run_id"] for r in json.loads(result.stdout)) == sorted(valid)
    elif command == "report":
        result = run("report", "--out", tmp_path / "out", "--n-boot", "100", "--results-dir", folder)
        _only_warning(result, bad, bad_case.problem)
        md = (tmp_path / "out" / "report.md").read_text()
        assert f"{len(valid)} completed runs from" in md and "1 file(s) under runs/ are not sound result rows" in md
        assert f"## Files not counted\n\n- skipping {bad}: " in md
        cells = " ".join(map(str, pd.read_csv(tmp_path / "out" / "cells.csv")["run_ids"]))
        assert all(run_id in cells for run_id in valid) and (not bad_case.removes or damaged["run_id"] not in cells)
    elif command == "evaluate":
        assert_one_line_error(run("evaluate", _ref(bad), "--results-dir", folder), str(bad), bad_case.problem, code=5)
    elif command == "gradcam":
        assert_one_line_error(run("report", "gradcam", _ref(bad), "--out", tmp_path / "out", "--results-dir", folder),
                              str(bad), bad_case.problem, code=5)
        assert not (tmp_path / "out").exists()
    else:  # training a run whose row is damaged: refused, so that the damaged row is never replaced unseen
        result = run("train", "adrenal3d", "--preset", "cpu", "--backbone", damaged["backbone"], "--booster",
                     damaged["booster"], "--seed", "0", "--results-dir", folder, "--data-dir", tmp_path / "none")
        if case == "name-not-run-id":  # the run's own file is gone: nothing to protect, training starts (no data)
            assert_one_line_error(result, "data file not found", code=3)
        else:
            assert_one_line_error(result, str(folder / "runs" / f"{damaged['run_id']}.parquet"), bad_case.problem,
                                  code=5)
    assert _snapshot(folder) == before
    if command in ("runs", "report"):  # the bulk read found the bad file and left only it to be read alone
        assert at_once and all(got is not None and bad in got[1] for got in at_once), at_once


def _ref(bad: Path) -> str:
    """How a user names the file: its run id where its name is one, else its path."""
    return bad.stem if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", bad.stem) else str(bad)


@pytest.mark.parametrize("args, code, fragments", [
    (lambda f, t: ["evaluate", "*", "--results-dir", f], 2, ["'*' is not a run id"]),
    (lambda f, t: ["evaluate", "", "--results-dir", f], 2, ["'' is not a run id"]),
    (lambda f, t: ["evaluate", "../x", "--results-dir", f], 2, ["'../x' is not a run id"]),
    (lambda f, t: ["evaluate", "adrenal3d-nothing", "--results-dir", f], 5, ["no run 'adrenal3d-nothing' under"]),
    (lambda f, t: ["report", "--results-dir", t / "missing", "--out", t / "out"], 5, ["missing: not a results folder"]),
    (lambda f, t: ["report", "--results-dir", f / "runs" / next((f / "runs").iterdir()).name, "--out", t / "out"], 5,
     ["not a results folder"]),
    (lambda f, t: ["report", "--results-dir", f, "--out", f / "checkpoints" / next((f / "checkpoints").iterdir()).name
                   / "best.pt"], 2, ["best.pt: is a file; give a folder"]),
    (lambda f, t: ["runs", "--results-dir", f / "runs" / next((f / "runs").iterdir()).name], 5,
     ["is a file, not a results folder"]),
    (lambda f, t: ["bench", "breast", "--preset", "cpu", "--steps", "0", "--results-dir", f], 2,
     ["Invalid value for '--steps'", "medboost bench --help"]),
], ids=["evaluate-star", "evaluate-empty", "evaluate-dotdot", "evaluate-unknown", "report-missing-folder",
        "report-on-a-file", "report-out-is-a-file", "runs-on-a-file", "bench-zero-steps"])
def test_a_bad_results_location_is_one_line(tmp_path, results, args, code, fragments):
    folder, _ = results
    before = _snapshot(folder)
    assert_one_line_error(run(*args(folder, tmp_path)), *fragments, code=code)
    assert _snapshot(folder) == before and not (tmp_path / "out").exists()
