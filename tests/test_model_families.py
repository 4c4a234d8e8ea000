"""The model-family registry (medboost_cli/models/families): the recipe schema, studies, bench and Grad-CAM ask a
family's entry, an unknown family is one line listing the registered ones, and the model layer builds without the
recipe schema."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import fields, replace
from types import SimpleNamespace

import pytest
import torch

from medboost_cli.errors import ConfigError, MedboostError
from medboost_cli.models import FAMILIES, build_model, model_family
from medboost_cli.models.families import DEFAULT_FAMILY, PneumoLLMConfig
from medboost_cli.models.families.pneumollm import model_options
from medboost_cli.models.pneumollm import PneumoLLMOptions
from medboost_cli.recipes import Recipe, load_recipe
from medboost_cli.studies import Variant

from .conftest import TINY_SETS
from .test_cli import SOURCE_ROOT


def test_unknown_family_is_one_line_listing_the_registered_ones():
    with pytest.raises(ConfigError) as e:
        model_family("llava", "--model llava")
    message = str(e.value)
    assert "\n" not in message and message.startswith("--model llava: bad value for 'model': 'llava'")
    assert message.endswith("choose one of rllm, pneumollm")
    with pytest.raises(ConfigError, match=r"--set model=\[1\]: .*\[1\] is not a registered model family"):
        load_recipe("breast", preset="cpu", sets=["model=[1]"])


def test_the_recipe_schema_takes_its_families_from_the_registry():
    assert Recipe.model_fields["model"].annotation.__args__ == tuple(FAMILIES)
    assert Recipe.model_fields["model"].default == DEFAULT_FAMILY == "rllm"
    sections = [name for name, family in FAMILIES.items() if family.section is not None]
    assert sections == ["pneumollm"] and Recipe.model_fields["pneumollm"].annotation is PneumoLLMConfig
    # each section sits before train, so a recipe's dump keeps its key order
    assert list(Recipe.model_fields) == ["task", "seed", "model", "data", "backbone", "booster", "pneumollm", "train"]
    recipe = load_recipe("breast", preset="cpu", flags=[("--model", "model", "pneumollm")])
    assert recipe.family is FAMILIES["pneumollm"] and load_recipe("breast", preset="cpu").family is FAMILIES["rllm"]


def test_only_the_booster_keys_a_family_reads_are_hashed():
    rllm = load_recipe("breast", preset="cpu")
    assert rllm.config_hash() != load_recipe("breast", preset="cpu", sets=["booster.layer=2"]).config_hash()
    pneumo = [("--model", "model", "pneumollm")]
    assert FAMILIES["pneumollm"].booster_keys == ("llm", "llm_init", "dtype")
    base = load_recipe("breast", preset="cpu", flags=pneumo).config_hash()
    assert base == load_recipe("breast", preset="cpu", flags=pneumo, sets=["booster.layer=2"]).config_hash()
    assert base != load_recipe("breast", preset="cpu", flags=pneumo, sets=["booster.llm_init=random"]).config_hash()


def test_a_study_arm_is_written_as_its_family_says():
    assert FAMILIES["rllm"].arm_flags("out") == [("--booster", "booster.mode", "out")]
    assert FAMILIES["pneumollm"].arm_flags(None) == [("--model", "model", "pneumollm")]
    assert Variant(booster="hybrid").flags() == [("--booster", "booster.mode", "hybrid")]
    assert Variant(model="pneumollm", set=["pneumollm.tokens=2"]).flags() == [("--model", "model", "pneumollm")]
    # a family that is neither the default nor benched by booster mode names itself, and no booster
    other = replace(FAMILIES["rllm"], name="other", default=False)
    assert other.arm_flags("rllm") == [("--model", "model", "other"), ("--booster", "booster.mode", "rllm")]


def test_grad_cam_and_the_step_breakdown_ask_the_family():
    assert FAMILIES["rllm"].gradcam and not FAMILIES["pneumollm"].gradcam
    rllm = load_recipe("breast", preset="cpu")
    assert FAMILIES["rllm"].loads_lm(rllm) and not FAMILIES["rllm"].loads_lm(
        load_recipe("breast", preset="cpu", sets=["booster.mode=mlp"]))
    mlp = load_recipe("breast", preset="cpu", sets=["booster.mode=mlp"])
    assert mlp.lm_source == mlp.booster.llm  # mlp names its LM (it takes the width) but reads no weights


def test_build_model_asks_the_family_and_checks_its_dimensionality(monkeypatch):
    """A family registered beside the others is built by its own builder; a task of another dimensionality is one
    line from the registry, before any builder runs."""
    built = []
    toy = replace(FAMILIES["rllm"], name="toy", default=False, dims=(2,),
                  build=lambda recipe, task, device: built.append((recipe.model, task.short, device)) or "model")
    monkeypatch.setitem(FAMILIES, "toy", toy)
    task = load_recipe("breast", preset="cpu").task_info
    assert build_model(SimpleNamespace(model="toy"), task) == "model"
    assert built == [("toy", "breast", torch.device("cpu"))]
    task3d = load_recipe("adrenal3d", preset="cpu").task_info
    with pytest.raises(ConfigError, match="^model=toy takes 2D images; adrenal3d is 3D$"):
        build_model(SimpleNamespace(model="toy"), task3d)
    assert len(built) == 1


def test_pneumollm_on_a_3d_task_built_directly_is_a_config_error():
    recipe = load_recipe("adrenal3d", preset="cpu", sets=TINY_SETS[:1]).model_copy(update={"model": "pneumollm"})
    with pytest.raises(MedboostError, match="model=pneumollm takes 2D images; adrenal3d is 3D"):
        build_model(recipe, recipe.task_info)


def test_the_pneumollm_options_are_the_sections_keys_with_its_defaults():
    """The model's own dataclass mirrors the recipe section key for key (same names, same defaults), so the
    family's translation passes every switch through."""
    section = PneumoLLMConfig()
    for f in fields(PneumoLLMOptions):
        assert f.default == getattr(section, f.name), f.name
    options = model_options(PneumoLLMConfig(tokens=7, rope=False, source_norm="ln_post"))
    assert (options.tokens, options.rope, options.source_norm) == (7, False, "ln_post")


def test_the_model_layer_builds_without_the_recipe_schema():
    """models/ (the families included) imports no recipe module: the schema sits above it and derives from it."""
    probe = ("import sys, medboost_cli.models, medboost_cli.models.pneumollm, medboost_cli.models.families; "
             "print(sorted(m for m in sys.modules if m.startswith('medboost_cli.') and not "
             "m.startswith('medboost_cli.models')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)})
    assert out.returncode == 0, out.stderr
    loaded = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert not any(name in loaded for name in ("medboost_cli.recipes", "medboost_cli.results", "medboost_cli.engine"))


def test_no_model_family_is_chosen_by_name_outside_its_registry():
    """A family's name is never compared outside models/families, nor is a recipe's ``model`` compared with a
    string ("rllm" is also a booster mode, compared as one elsewhere)."""
    from .test_structure import PACKAGE, _compared_names

    home = PACKAGE / "models" / "families"
    only_families = set(FAMILIES) - set(Recipe.model_fields["booster"].annotation.model_fields["mode"].annotation.__args__)
    assert only_families == {"pneumollm"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if home in path.parents:
            continue
        tree = ast.parse(path.read_text())
        found += [f"{path.name} compares {name!r}" for name in _compared_names(path.read_text()) & only_families]
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(side, ast.Attribute) and side.attr == "model"
                                                     for side in [node.left, *node.comparators]):
                if any(isinstance(side, ast.Constant) for side in [node.left, *node.comparators]):
                    found.append(f"{path.name}:{node.lineno} compares a recipe's model with a name")
    assert not found
