"""The results module: run ids, the folder's layout, rows of the current and older schemas."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medboost_cli import results
from medboost_cli.results import bulk, checks
from medboost_cli.errors import MedboostError
from medboost_cli.recipes import load_recipe


def _old_row(run_id: str, booster: str) -> dict:
    """A row as schema 1 wrote it: no schema_version, no lm_norm."""
    row = results.new_row(run_id=run_id, status="completed", booster=booster, seed=0, test_auc=0.75,
                          test_scores=[[0.2, 0.8]], test_labels=[[1]])
    return {k: v for k, v in row.items() if k not in results.ADDED_AFTER_V1}


def _write_old(folder, row) -> None:
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row]), folder / "runs" / f"{row['run_id']}.parquet")


def test_run_id_is_built_and_split_in_one_place():
    recipe = load_recipe("breast", preset="cpu", flags=[("--seed", "seed", 12)])
    run_id = recipe.run_id()
    assert run_id == f"breast-vit-mini-rllm-{recipe.config_hash()}-s12"
    assert results.cell_id(run_id) == f"breast-vit-mini-rllm-{recipe.config_hash()}"
    other_seed = recipe.model_copy(update={"seed": 3}).run_id()
    assert results.cell_id(other_seed) == results.cell_id(run_id) and other_seed != run_id


@pytest.mark.parametrize("bad", ["", "*", "../escape", "a/b", "run id", "-leading-dash", "x" * 201])
def test_run_ids_outside_the_character_set_are_refused(tmp_path, bad):
    with pytest.raises(MedboostError, match="is not a run id"):
        results.ResultsDir(tmp_path).row(bad)
    with pytest.raises(MedboostError, match="is not a run id"):
        results.find_run(tmp_path, bad)


def test_layout_keeps_every_path_under_the_folder(tmp_path):
    layout = results.ResultsDir(tmp_path)
    run = "breast-vit-mini-rllm-abcd1234-s0"
    assert layout.row(run) == tmp_path / "runs" / f"{run}.parquet"
    assert layout.last(run) == tmp_path / "checkpoints" / run / "last.pt"
    assert layout.best(run) == tmp_path / "checkpoints" / run / "best.pt"


def test_new_row_has_every_column_and_refuses_unknown_ones():
    row = results.new_row(run_id="a-b-c-d-s0", status="running")
    assert list(row) == results.COLUMNS and row["schema_version"] == results.SCHEMA_VERSION
    assert row["test_auc"] is None
    with pytest.raises(ValueError, match="unknown result column"):
        results.new_row(run_id="a-b-c-d-s0", not_a_column=1)


def test_rows_of_schema_1_are_read_with_what_those_runs_did(tmp_path):
    current = results.new_row(run_id="breast-vit-mini-rllm-00000000-s0", status="completed", booster="rllm",
                              lm_norm="unit", seed=0, test_auc=0.8, test_scores=[[0.4, 0.6]], test_labels=[[1]])
    results.write_row(tmp_path, current)
    _write_old(tmp_path, _old_row("breast-vit-mini-rllm-11111111-s0", "rllm"))
    _write_old(tmp_path, _old_row("breast-vit-mini-none-11111111-s0", "none"))

    df = results.load_results(tmp_path).set_index("run_id")
    assert list(df.reset_index().columns) == results.COLUMNS
    # Before lm_norm existed, an F_L had no final norm; a run without F_L has none to describe.
    assert df.loc["breast-vit-mini-rllm-11111111-s0", "lm_norm"] == "none"
    assert df.loc["breast-vit-mini-none-11111111-s0", "lm_norm"] is None
    assert df.loc["breast-vit-mini-rllm-00000000-s0", "lm_norm"] == "unit"
    assert df["schema_version"].to_dict() == {"breast-vit-mini-rllm-00000000-s0": results.SCHEMA_VERSION,
                                              "breast-vit-mini-rllm-11111111-s0": 1,
                                              "breast-vit-mini-none-11111111-s0": 1}
    assert df.loc["breast-vit-mini-rllm-11111111-s0", "test_auc"] == 0.75
    assert list(df.loc["breast-vit-mini-rllm-11111111-s0", "test_scores"][0]) == pytest.approx([0.2, 0.8])

    old = results.find_run(tmp_path, "breast-vit-mini-rllm-1111")
    assert old["schema_version"] == 1 and old["lm_norm"] == "none" and list(old) == results.COLUMNS
    assert results.read_row(tmp_path, "breast-vit-mini-none-11111111-s0")["lm_norm"] is None
    assert results.read_row(tmp_path, "breast-vit-mini-none-99999999-s0") is None


def test_load_results_selects_columns_and_status(tmp_path):
    for i, status in enumerate(("completed", "failed", "completed")):
        results.write_row(tmp_path, results.new_row(run_id=f"breast-vit-mini-none-0000000{i}-s0", status=status))
    df = results.load_results(tmp_path, columns=["run_id", "lm_norm"], status="completed")
    assert list(df.columns) == ["run_id", "lm_norm", "status"] and len(df) == 2
    assert results.load_results(tmp_path / "missing").empty


def test_a_recipe_saved_before_the_fidelity_keys_existed_keeps_what_that_run_computed():
    from medboost_cli.recipes import load_recipe, saved_recipe

    for task, backbone in (("breast", "vit-mini"), ("adrenal3d", "vivit-s")):
        recipe = load_recipe(task, preset="cpu", flags=[("--backbone", "backbone.name", backbone)])
        assert saved_recipe(recipe.model_dump_json()) == recipe  # a current row: read as written
        old = recipe.model_dump(mode="json")
        del old["booster"]["lm_norm"], old["booster"]["proj_init"]
        del old["backbone"]["vivit_norms"], old["backbone"]["vivit_pos"]
        restored = saved_recipe(json.dumps(old))
        assert (restored.booster.lm_norm, restored.booster.proj_init) == ("none", "default")
        vivit = backbone.startswith("vivit")
        assert restored.backbone.vivit_norms == ("head" if vivit else None)
        assert restored.backbone.vivit_pos == ("factorised" if vivit else None)


def test_stale_writes_are_this_runs_temporary_files_only(tmp_path):
    layout = results.ResultsDir(tmp_path)
    mine, other = "breast-vit-mini-rllm-00000000-s0", "breast-vit-mini-rllm-00000000-s1"
    for run in (mine, other):
        layout.checkpoints(run).mkdir(parents=True)
        (layout.checkpoints(run) / ".last.pt.abc123.tmp").write_bytes(b"half")
        layout.runs.mkdir(exist_ok=True)
        (layout.runs / f".{run}.parquet.xyz.tmp").write_bytes(b"half")
    (layout.checkpoints(mine) / "best.pt").write_bytes(b"whole")
    assert sorted(p.name for p in layout.stale_writes(mine)) == sorted([".last.pt.abc123.tmp", f".{mine}.parquet.xyz.tmp"])


def _mixed_folder(folder) -> list:
    """Sound rows whose files differ in columns and types: a current LM run with a recipe and scores, a baseline
    (null LM columns), a run still going (null test metrics and scores), rows of schema 1 (no schema_version or
    lm_norm) and a schema-2 row without the columns added later (world_size, devices)."""
    recipe = load_recipe("breast", preset="cpu")
    results.write_row(folder, results.new_row(
        run_id="breast-vit-mini-rllm-00000000-s0", status="completed", booster="rllm", llm="minilm", layer=5,
        lm_norm="unit", seed=0, test_auc=0.8, test_scores=[[0.4, 0.6], [0.9, 0.1]], test_labels=[[1], [0]],
        config_json=recipe.model_dump_json(), device="cpu", world_size=1))
    results.write_row(folder, results.new_row(
        run_id="breast-vit-mini-none-00000000-s0", status="completed", booster="none", seed=0, test_auc=0.7,
        test_scores=[[0.3, 0.7]], test_labels=[[1]], device="cpu"))
    results.write_row(folder, results.new_row(run_id="breast-vit-mini-rllm-00000000-s1", status="running",
                                              booster="rllm", seed=1, config_json=recipe.model_dump_json()))
    _write_old(folder, _old_row("breast-vit-mini-rllm-11111111-s0", "rllm"))
    _write_old(folder, _old_row("breast-vit-mini-none-11111111-s0", "none"))
    v2 = results.new_row(run_id="adrenal3d-vivit-s-rllm-22222222-s0", status="failed", booster="rllm", seed=0,
                         device="cuda:0", error="out of memory")
    _write_old(folder, {k: v for k, v in v2.items() if k not in results.ADDED_IN_V2} | {"schema_version": 2})
    return sorted((folder / "runs").glob("*.parquet"))  # the schema-2 row first: its columns are not the last's


@pytest.mark.parametrize("columns", [None, ["run_id", "status", "test_auc", "schema_version", "booster", "device"],
                                     ["lm_norm", "world_size", "run_id"]])
def test_a_folder_read_at_once_equals_its_files_read_one_by_one(tmp_path, monkeypatch, columns):
    files = _mixed_folder(tmp_path)
    at_once, at_fault = bulk.read_runs_at_once(files, columns)
    assert at_fault == [] and at_once.num_rows == len(files)
    monkeypatch.setattr(bulk, "read_runs_at_once", lambda files, columns: None)
    one_by_one = results.read_runs_table(files, columns)
    assert at_once.schema == one_by_one.schema  # the same columns, in the same order, of the same types
    assert json.dumps(at_once.to_pylist()) == json.dumps(one_by_one.to_pylist())  # NaN (test_spec) equals NaN


def test_a_folder_of_sound_rows_is_read_in_bulk_not_file_by_file(tmp_path, monkeypatch):
    files = _mixed_folder(tmp_path)

    def read_run(path, columns=None):
        raise AssertionError(f"{path} read on its own")

    monkeypatch.setattr(bulk, "read_run", read_run)
    df = results.load_results(tmp_path)
    assert sorted(df["run_id"]) == sorted(f.stem for f in files)
    assert df.set_index("run_id").loc["adrenal3d-vivit-s-rllm-22222222-s0", "world_size"] == 1


def test_only_the_files_at_fault_are_read_again_alone(tmp_path, monkeypatch):
    """Among sound rows, a file that is not Parquet and a copy of a row under another name: the bulk read keeps the
    sound rows and leaves only those two to ``read_run``, which names each in one warning, in the files' order."""
    files = _mixed_folder(tmp_path)
    garbage = tmp_path / "runs" / "breast-vit-mini-none-00000000-s9.parquet"
    garbage.write_bytes(b"not parquet")
    misnamed = tmp_path / "runs" / "aaa-misnamed.parquet"
    misnamed.write_bytes(files[-1].read_bytes())
    alone, read_run = [], bulk.read_run
    monkeypatch.setattr(bulk, "read_run", lambda path, columns=None: alone.append(path) or read_run(path, columns))
    warnings = []
    df = results.load_results(tmp_path, warn=warnings.append)
    assert alone == [misnamed, garbage]
    assert sorted(df["run_id"]) == sorted(f.stem for f in files)
    assert [w.split(":")[0] for w in warnings] == [f"skipping {misnamed}", f"skipping {garbage}"]
    assert "(a copy?)" in warnings[0] and "not a readable Parquet result" in warnings[1]


def test_each_row_of_a_table_gets_the_problem_its_file_alone_gets(tmp_path):
    """The row checks run over many rows at once (a folder read at once) and over one (a file read alone) and name
    the same problem for each row: which row a short or NaN score list sits in is kept through the flattening."""
    good = results.new_row(run_id="breast-vit-mini-none-00000000-s0", status="completed", booster="none",
                           test_scores=[[0.3, 0.7], [0.5, 0.5]], test_labels=[[1], [0]])
    rows = [good,
            good | {"run_id": "breast-vit-mini-none-00000000-s1", "test_scores": [[0.3, float("nan")], [0.5, 0.5]]},
            good | {"run_id": "breast-vit-mini-none-00000000-s2", "test_scores": [[0.3, 0.7]]},
            good | {"run_id": "breast-vit-mini-none-00000000-s3", "status": "running", "test_scores": None,
                    "test_labels": None},
            good | {"run_id": "breast-vit-mini-none-00000000-s4", "test_labels": None},
            good | {"run_id": "breast-vit-mini-none-00000000-s5",
                    "test_scores": [[float("inf"), None], [0.5, float("nan")]]},
            good | {"run_id": "breast-vit-mini-none-00000000-s6", "status": "done"}]
    paths = [results.write_row(tmp_path, row) for row in rows]
    table = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="permissive")
    alone = [checks.rows_problems([p], pq.read_table(p))[0] for p in paths]
    assert checks.rows_problems(paths, table) == alone
    assert [a is None for a in alone] == [True, False, False, True, False, False, False]
    assert "1 of its test_scores are not finite" in alone[1] and "3 of its test_scores" in alone[5]
    assert "has 1 rows of test_scores for 2 test_labels" in alone[2]


def test_test_labels_that_are_not_lists_are_a_skipped_file_not_a_traceback(tmp_path):
    path = next(f for f in _mixed_folder(tmp_path) if f.stem == "breast-vit-mini-rllm-00000000-s0")
    row = pq.read_table(path).to_pylist()[0]
    pq.write_table(pa.Table.from_pylist([row | {"test_labels": "1,0"}]), path)
    warnings = []
    df = results.load_results(tmp_path, warn=warnings.append)
    assert path.stem not in set(df["run_id"]) and len(df) == 5
    assert warnings == [f"skipping {path}: its test_labels are string, not lists; move it out of {path.parent} "
                        f"(or delete it)"]


def test_a_row_is_written_without_column_statistics_or_dictionary_pages(tmp_path):
    """Both only make a one-row file bigger and slower to read; files written with them (``_write_old``, pyarrow's
    defaults) are read alike (the mixed-folder tests above)."""
    path = results.write_row(tmp_path, results.new_row(run_id="breast-vit-mini-none-00000000-s0", status="running",
                                                       config_json="{}", history_json="[]"))
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = [row_group.column(i) for i in range(row_group.num_columns)]
    assert all(not c.is_stats_set and not c.has_dictionary_page for c in chunks)
