"""Compatibility (medboost_cli.compat): run ids that stay what they are, rows of older schemas upgraded one way for
one row and for a folder, and the recipe markers that declare what a key added later means for older runs."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from medboost_cli import compat, results
from medboost_cli.recipes import Recipe, load_recipe, saved_recipe

from .test_results import _mixed_folder

# The CPU preset before its step budget (presets/cpu.yaml): these keys give its configurations back their run ids.
EPOCH_CPU = ["train.steps=null", "train.val_subset=null"]

# Run ids of existing configurations: a change to the recipe schema, the recipes, the presets or the hash that
# moves one of them would orphan every result of that configuration.
KNOWN_RUN_IDS = [
    ("breast", None, [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], [],
     "breast-vit-s-rllm-dbe89644-s3"),
    ("breast", None, [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], ["train.micro_batch=4"],
     "breast-vit-s-rllm-46634577-s3"),
    ("breast", "cpu", [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)],
     ["train.device=cpu", "train.threads=2", *EPOCH_CPU], "breast-vit-mini-rllm-68150a46-s3"),
    ("breast", "cpu", [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], ["booster.lm_norm=unit", *EPOCH_CPU],
     "breast-vit-mini-rllm-70dc1810-s3"),
    ("breast", "cpu", [("--booster", "booster.mode", "none")], EPOCH_CPU, "breast-vit-mini-none-bdf6ec78-s0"),
    ("breast", None, [("--booster", "booster.mode", "hybrid")], ["train.micro_batch=16"],
     "breast-vit-s-hybrid-c1ac8763-s0"),
    ("derma", "cpu", [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], EPOCH_CPU,
     "derma-vit-mini-rllm-910853ed-s3"),
    ("adrenal3d", None, [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], [],
     "adrenal3d-vit3d-rllm-c86e8bfe-s3"),
    ("adrenal3d", "cpu", [("--backbone", "backbone.name", "vivit-s")], EPOCH_CPU,
     "adrenal3d-vivit-s-rllm-3cccdb79-s0"),
    ("adrenal3d", None, [("--backbone", "backbone.name", "vivit-s")], ["backbone.vivit_norms=head"],
     "adrenal3d-vivit-s-rllm-2ca4708c-s0"),
    ("breast", None, [("--model", "model", "pneumollm")], [], "breast-clip-l14-pneumollm-fdd6e230-s0"),
    ("breast", "cpu", [("--model", "model", "pneumollm")], ["train.micro_batch=2", *EPOCH_CPU],
     "breast-vit-mini-pneumollm-48d65011-s0"),
    ("derma", "cpu", [("--model", "model", "pneumollm")], ["pneumollm.tokens=2", *EPOCH_CPU],
     "derma-vit-mini-pneumollm-6c094faa-s0"),
    # the CPU preset with its step budget
    ("breast", "cpu", [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], [],
     "breast-vit-mini-rllm-2c327aa2-s3"),
    ("breast", "cpu", [("--booster", "booster.mode", "none")], [], "breast-vit-mini-none-651956f3-s0"),
    ("derma", "cpu", [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], [],
     "derma-vit-mini-rllm-a3632dc4-s3"),
    ("adrenal3d", "cpu", [("--backbone", "backbone.name", "vivit-s")], [], "adrenal3d-vivit-s-rllm-818dbd51-s0"),
    ("derma", "cpu", [("--model", "model", "pneumollm")], ["pneumollm.tokens=2"],
     "derma-vit-mini-pneumollm-1daccdc7-s0"),
]


@pytest.mark.parametrize("task, preset, flags, sets, run_id", KNOWN_RUN_IDS)
def test_existing_configurations_keep_their_run_ids(task, preset, flags, sets, run_id):
    recipe = load_recipe(task, preset=preset, flags=flags, sets=sets)
    assert recipe.run_id() == run_id
    assert saved_recipe(recipe.model_dump_json()).run_id() == run_id  # read back from its row: the same id


def test_the_upgrades_are_one_ordered_history():
    versions = [u.version for u in compat.UPGRADES if u.version is not None]
    assert versions == sorted(versions) == list(range(1, compat.SCHEMA_VERSION))
    assert results.SCHEMA_VERSION == compat.SCHEMA_VERSION
    added = [c for u in compat.UPGRADES for c in u.adds]
    assert len(added) == len(set(added)) and set(added) <= set(results.COLUMNS)
    for u in compat.UPGRADES:  # what an upgrade consults is a column every row of its time had
        assert set(u.reads) <= set(results.COLUMNS) - set(added)


def _plain(value):
    """A value as JSON writes it (numpy arrays as lists, NaN and None alike as null): what both readers hold."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return None if value is None or value != value else value


@pytest.mark.parametrize("columns", [None, ["run_id", "lm_norm", "devices", "world_size", "schema_version"]])
def test_a_folder_and_its_rows_read_one_by_one_agree(tmp_path, columns):
    """load_results (a folder) and read_row (one row) upgrade older rows the same way: every value of every row,
    rows without a device included (no device: no devices either)."""
    _mixed_folder(tmp_path)
    df = results.load_results(tmp_path, columns)
    assert len(df) == 6
    for record in df.to_dict("records"):
        row = results.read_row(tmp_path, record["run_id"])
        assert {c: _plain(v) for c, v in record.items()} == {c: _plain(row[c]) for c in record}, record["run_id"]
    v2 = results.read_row(tmp_path, "adrenal3d-vivit-s-rllm-22222222-s0")
    assert (v2["world_size"], v2["devices"]) == (1, '["cuda:0"]')
    lacks_device = df.set_index("run_id").loc["breast-vit-mini-rllm-11111111-s0"]
    assert lacks_device["devices"] is None and lacks_device["world_size"] == 1


def test_an_upgrade_fills_only_what_an_older_row_lacks():
    table = pa.Table.from_pylist([
        {"run_id": "a", "booster": "rllm", "lm_norm": None, "schema_version": None, "device": "cpu"},
        {"run_id": "b", "booster": "rllm", "lm_norm": None, "schema_version": 3, "device": None},
        {"run_id": "c", "booster": "none", "lm_norm": None, "schema_version": None, "device": None}])
    rows = compat.upgrade_table(table, ["run_id", "lm_norm", "schema_version", "world_size", "devices", "fold"])
    assert rows.to_pylist() == [
        {"run_id": "a", "lm_norm": "none", "schema_version": 1, "world_size": 1, "devices": '["cpu"]', "fold": None},
        {"run_id": "b", "lm_norm": None, "schema_version": 3, "world_size": 1, "devices": None, "fold": None},
        {"run_id": "c", "lm_norm": None, "schema_version": 1, "world_size": 1, "devices": None, "fold": None}]


def test_hash_omitted_keys_are_left_out_only_while_their_condition_holds():
    recipe = load_recipe("breast", preset="cpu")
    view = compat.hash_view(recipe, recipe.model_dump(mode="json"))
    assert "micro_batch" not in view["train"] and not {"folds", "fold", "fold_seed", "val_fraction"} & set(view["data"])
    chunked = recipe.model_copy(update={"train": recipe.train.model_copy(update={"micro_batch": 8})})
    assert compat.hash_view(chunked, chunked.model_dump(mode="json"))["train"]["micro_batch"] == 8
    assert chunked.config_hash() != recipe.config_hash()


def test_legacy_values_go_only_where_a_saved_recipe_lacks_the_key():
    data = {"task": "adrenal3d", "backbone": {"name": "vivit-s"}, "booster": {"lm_norm": "unit"}}
    filled = compat.fill_legacy(Recipe, data)
    assert filled["booster"] == {"lm_norm": "unit", "proj_init": "default"}  # a saved key is kept
    assert (filled["backbone"]["vivit_norms"], filled["backbone"]["vivit_pos"]) == ("head", "factorised")
    vit = compat.fill_legacy(Recipe, {"task": "breast", "backbone": {"name": "vit-s"}})
    assert "vivit_norms" not in vit["backbone"] and "vivit_pos" not in vit["backbone"]
    assert compat.fill_legacy(Recipe, {"task": "breast", "booster": "x"})["booster"] == "x"  # left to validation
