"""Recipes validate, overrides apply in order, and every error names its source, key and value."""

from __future__ import annotations

import pytest

from medboost_cli.errors import MedboostError
from medboost_cli.recipes import BOOSTER_MODES, Recipe, load_recipe, recipes_dir
from medboost_cli.tasks import SHORT_NAMES, resolve_task

PAPER_2D = ["breast", "retina", "pneumonia", "derma", "oct", "organa"]


@pytest.mark.parametrize("task", PAPER_2D)
def test_every_2d_recipe_has_the_papers_settings(task):
    r = load_recipe(task)
    assert r.task == SHORT_NAMES[task]
    assert (r.backbone.name, r.backbone.pretrained) == ("vit-s", True)
    assert (r.booster.mode, r.booster.llm, r.booster.layer, r.booster.freeze) == ("rllm", "huggyllama/llama-7b", 31, True)
    assert (r.train.lr, r.train.weight_decay, r.train.batch_size, r.train.epochs) == (5e-4, 0.05, 128, 100)
    assert r.train.select_metric == "auc"


def test_cpu_preset_swaps_in_a_small_configuration():
    r = load_recipe("breast", preset="cpu")
    assert r.data.size == 28 and r.backbone.name == "vit-mini" and not r.backbone.pretrained
    assert r.booster.llm == "minilm" and r.train.epochs < 100


def test_layers_apply_in_order_set_wins():
    r = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "out"), ("--seed", "seed", 4)],
                    sets=["train.lr=2e-3", "booster.mode=hybrid", "data.scale=[0.5, 1.0]"])
    assert (r.booster.mode, r.seed, r.train.lr, r.data.scale) == ("hybrid", 4, 2e-3, (0.5, 1.0))


def test_unknown_key_names_the_source_key_and_valid_keys():
    with pytest.raises(MedboostError) as e:
        load_recipe("breast", sets=["train.lrr=0.1"])
    msg = str(e.value)
    assert "--set train.lrr=0.1" in msg and "unknown key 'train.lrr'" in msg and "0.1" in msg and "lr," in msg


def test_unknown_key_in_a_recipe_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {recipes_dir() / 'base' / '2d.yaml'}\ntask: breastmnist\ntrain:\n  epochz: 3\n")
    with pytest.raises(MedboostError, match=rf"{bad}: unknown key 'train.epochz' \(value 3\)"):
        load_recipe("breast", recipe_file=bad)


def test_bad_value_names_key_and_value():
    with pytest.raises(MedboostError, match=r"--booster banana: bad value for 'booster.mode': 'banana'"):
        load_recipe("breast", flags=[("--booster", "booster.mode", "banana")])
    with pytest.raises(MedboostError, match=r"bad value for 'train.epochs': 0"):
        load_recipe("breast", sets=["train.epochs=0"])


def test_unknown_task_and_preset_and_size():
    with pytest.raises(MedboostError, match="unknown task 'brest'"):
        load_recipe("brest")
    with pytest.raises(MedboostError, match="unknown preset 'gpu'; available: cpu"):
        load_recipe("breast", preset="gpu")
    with pytest.raises(MedboostError, match="size 100 is not available for breastmnist"):
        load_recipe("breast", sets=["data.size=100"])


def test_malformed_set_and_yaml(tmp_path):
    with pytest.raises(MedboostError, match="expected KEY=VALUE"):
        load_recipe("breast", sets=["train.lr"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    with pytest.raises(MedboostError, match=rf"{broken} line \d+: not valid YAML"):
        load_recipe("breast", recipe_file=broken)


def test_task_names_map_to_flags():
    assert resolve_task("breast").flag == "breastmnist"
    assert resolve_task("BreastMNIST").short == "breast"
    assert resolve_task("adrenal3d").dims == 3 and resolve_task("adrenal3d").sizes == (28, 64)
    assert resolve_task("chestmnist").multilabel


def test_run_id_is_stable_and_separates_experiments():
    a = load_recipe("breast", preset="cpu")
    assert a.run_id() == load_recipe("breast", preset="cpu").run_id()
    assert a.run_id().startswith("breast-vit-mini-rllm-") and a.run_id().endswith("-s0")
    b = load_recipe("breast", preset="cpu", sets=["train.lr=3e-3"])
    c = load_recipe("breast", preset="cpu", sets=["train.device=cpu", "train.threads=1"])
    assert b.config_hash() != a.config_hash() and c.config_hash() == a.config_hash()


def test_schema_lists_all_booster_modes():
    assert BOOSTER_MODES == ("none", "rllm", "out", "hybrid", "mlp")
    assert Recipe.model_fields["booster"].annotation.model_fields["llm_init"].annotation.__args__ == (
        "pretrained", "random", "shuffled")


@pytest.mark.parametrize("task", ["fracture3d", "adrenal3d", "nodule3d", "vessel3d"])
@pytest.mark.parametrize("backbone", ["vit3d", "vivit-s", "vivit-m"])
def test_3d_recipes_have_the_papers_settings(task, backbone):
    r = load_recipe(task, flags=[("--backbone", "backbone.name", backbone)])
    assert r.task_info.dims == 3 and r.backbone.name == backbone and not r.backbone.pretrained
    assert (r.train.lr, r.train.batch_size, r.train.epochs) == (1e-5, 128, 100)
    assert (r.booster.llm, r.booster.layer) == ("huggyllama/llama-7b", 31)
    cpu = load_recipe(task, preset="cpu", flags=[("--backbone", "backbone.name", backbone)])
    assert cpu.backbone.name == backbone and cpu.booster.llm == "minilm" and cpu.backbone.patch_size == 7


def test_2d_backbone_on_a_3d_task_is_a_clear_error():
    from medboost_cli.models import build_model

    r = load_recipe("adrenal3d", preset="cpu", flags=[("--backbone", "backbone.name", "vit-mini")])
    with pytest.raises(MedboostError, match="backbone 'vit-mini' takes 2D input but the task is 3D; use one of vit3d"):
        build_model(r, r.task_info)
