"""Where torch.compile keeps its graphs (compile_cache.py): $MEDBOOST_COMPILE_CACHE, else $TORCHINDUCTOR_CACHE_DIR;
and ``train.compile``, off by default, is part of the run's recorded recipe."""

from __future__ import annotations

import json
import os

import torch

from medboost_cli import compile_cache
from medboost_cli.recipes import load_recipe


def test_medboosts_cache_setting_points_inductor_at_its_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.delenv(compile_cache.CACHE_ENV, raising=False)
    assert compile_cache.use_cache_dir() == str(tmp_path / "inductor")  # torch's own setting, kept
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "shared" / "cache"))
    assert compile_cache.use_cache_dir() == str(tmp_path / "shared" / "cache")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "shared" / "cache")  # what children inherit
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str(tmp_path / "shared" / "cache")  # where inductor writes its graphs


def test_compile_model_compiles_with_the_cache_set(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "cache"))
    model = torch.nn.Linear(2, 2)
    compiled = compile_cache.compile_model(model)
    assert compiled is not model and compiled._orig_mod is model
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")


def test_compile_is_off_by_default_and_recorded():
    recipe = load_recipe("breast", preset="cpu")
    on = load_recipe("breast", preset="cpu", sets=["train.compile=true"])
    assert recipe.train.compile is False and json.loads(recipe.model_dump_json())["train"]["compile"] is False
    assert on.run_id() != recipe.run_id()
