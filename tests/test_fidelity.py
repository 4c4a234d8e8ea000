"""Fidelity to the released R-LLM code: F_L's final norm (booster.lm_norm), F_E/F_D initialisation
(booster.proj_init) and the keys that record them, each checked against the formula written out here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medboost_cli.engine import train
from medboost_cli.errors import MedboostError
from medboost_cli.models import build_model
from medboost_cli.models.booster import Booster
from medboost_cli.models.llm_loading import load_llm_layer
from medboost_cli.recipes import load_recipe

from .conftest import TINY_SETS
from .test_llm_layer import _copy_checkpoint, _meta_from_hf

# ---------------------------------------------------------------------------------------- booster.lm_norm


@pytest.fixture(scope="module")
def layouts(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """The tiny LLaMA in Hugging Face layout (sharded safetensors) and in Meta layout (two model-parallel files,
    q/k rows in Meta's order)."""
    folder, model = tiny_llama
    meta = _meta_from_hf(model, tmp_path_factory.mktemp("meta") / "ckpt", shards=2, permute_back=True)
    return {"hf": folder, "meta": meta}


def rms_norm(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight


def reference_layer(model, index: int):
    """transformers' own LLaMA layer, run without rotation (cos 1, sin 0) and without a mask."""
    layer = model.model.layers[index]

    def run(x):
        b, n, _ = x.shape
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        cos, sin = torch.ones(b, n, head_dim), torch.zeros(b, n, head_dim)
        out = layer(x, attention_mask=torch.zeros(b, 1, n, n), position_embeddings=(cos, sin))
        return out[0] if isinstance(out, tuple) else out

    return run


FORMULAS = {  # with N the norm after the layer L
    "rllm": lambda E, L, N, D, x: D(N(L(E(x))) + E(x)),
    "out": lambda E, L, N, D, x: x + D(N(L(E(x)))),
    "hybrid": lambda E, L, N, D, x: x + D(N(L(E(x))) + E(x)),
}


@pytest.mark.parametrize("layout", ["hf", "meta"])
@pytest.mark.parametrize("lm_norm", ["auto", "unit", "pretrained", "none"])
@pytest.mark.parametrize("mode", list(FORMULAS))
def test_booster_computes_its_formula_with_each_final_norm(tiny_llama, layouts, layout, lm_norm, mode):
    _, model = tiny_llama
    eps, final_weight = model.config.rms_norm_eps, model.model.norm.weight.detach()
    norms = {
        "unit": lambda h: rms_norm(h, torch.ones(()), eps),  # the released code's: final RMSNorm, weight 1
        "pretrained": lambda h: rms_norm(h, final_weight, eps),  # the LM's own final norm
        "none": lambda h: h,
    }
    norms["auto"] = norms["unit"]  # a LLaMA layer
    loaded = load_llm_layer(str(layouts[layout]), -1, norm=lm_norm)
    assert loaded.norm == ("unit" if lm_norm == "auto" else lm_norm)
    torch.manual_seed(0)
    booster = Booster(mode, dim=16, lm=loaded.block, lm_dim=64).eval()
    x = torch.randn(2, 5, 16)
    E = lambda t: t @ booster.encode.weight.T  # noqa: E731
    D = lambda t: t @ booster.decode.weight.T  # noqa: E731
    with torch.no_grad():
        expected = FORMULAS[mode](E, reference_layer(model, -1), norms[lm_norm], D, x)
        assert torch.allclose(booster(x), expected, atol=1e-5)


def test_the_final_norm_choices_differ_and_enter_the_layer_hash(tiny_llama, layouts):
    folder = str(layouts["hf"])
    hashes = {norm: load_llm_layer(folder, 1, norm=norm).sha256 for norm in ("unit", "pretrained", "none")}
    assert len(set(hashes.values())) == 3
    assert load_llm_layer(folder, 1, norm="auto").sha256 == hashes["unit"]
    x = torch.randn(1, 4, 64) * 5
    with torch.no_grad():
        unit = load_llm_layer(folder, 1, norm="unit").block(x)
    assert torch.allclose(unit.pow(2).mean(-1), torch.ones(()), atol=1e-4)  # unit-RMS tokens out of F_L


def test_pretrained_norm_reads_one_more_tensor(tiny_llama, monkeypatch):
    """Memory-lean: the layer's tensors plus model.norm.weight, nothing else."""
    import medboost_cli.models.checkpoint_hf as loading

    folder = tiny_llama[0]
    read: list[str] = []
    real = loading.read_safetensors

    def spy(path, keys, dtype):
        read.extend(keys)
        return real(path, keys, dtype)

    monkeypatch.setattr(loading, "read_safetensors", spy)
    loaded = load_llm_layer(str(folder), 1, norm="pretrained", dtype=torch.bfloat16)
    assert sorted(k for k in read if not k.startswith("model.layers.1.")) == ["model.norm.weight"]
    weight = loaded.block.norm.weight
    assert weight.dtype == torch.bfloat16 and torch.equal(weight, tiny_llama[1].model.norm.weight.bfloat16())


def test_norm_eps_comes_from_the_models_config(layouts):
    for layout in ("hf", "meta"):
        assert load_llm_layer(str(layouts[layout]), 0, norm="unit").block.norm.eps == 1e-6
    config = json.loads((layouts["hf"] / "config.json").read_text())
    assert config["rms_norm_eps"] == 1e-6  # rms_norm_eps (HF) / norm_eps (Meta), both written from it


def test_missing_final_norm_is_named(tiny_llama, tmp_path):
    from safetensors.torch import save_file

    folder, tensors = _copy_checkpoint(tiny_llama[0], tmp_path / "ckpt")
    del tensors["model.norm.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(MedboostError, match=r"no final norm weight .*model\.norm\.weight.*lm_norm=unit or none"):
        load_llm_layer(str(folder), 1, norm="pretrained")
    assert load_llm_layer(str(folder), 1, norm="unit").norm == "unit"  # nothing extra to read


def test_random_init_gives_the_final_norm_the_lms_own_init(tiny_llama):
    loaded = load_llm_layer(str(tiny_llama[0]), 1, init="random", norm="pretrained")
    assert torch.equal(loaded.block.norm.weight, torch.ones(64))
    bare = load_llm_layer(str(tiny_llama[0]), 1, init="random", norm="none")
    assert torch.equal(loaded.block.layer.state_dict()["mlp.up_proj.weight"], bare.block.state_dict()["mlp.up_proj.weight"])


def test_bert_layers_take_no_final_norm():
    assert load_llm_layer("minilm", -1, norm="auto").norm == "none"
    for choice in ("unit", "pretrained"):
        message = rf"booster.lm_norm={choice} is for LMs with a final norm \(llama, phi\); a BERT layer .*auto or none"
        with pytest.raises(MedboostError, match=message):
            load_llm_layer("minilm", -1, norm=choice)


# -------------------------------------------------------------------------------------- booster.proj_init


def _model(task: str, mode: str, *sets: str):
    recipe = load_recipe(task, preset="cpu", flags=[("--booster", "booster.mode", mode)], sets=TINY_SETS + list(sets))
    return build_model(recipe, recipe.task_info).model


def _nn_linear_default_std(fan_in: int) -> float:
    return 1 / (3 * fan_in) ** 0.5  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))


@pytest.mark.parametrize("mode", ["rllm", "mlp"])
def test_2d_projections_default_to_trunc_normal(mode):
    booster = _model("breast", mode).booster
    for linear in (booster.encode, booster.decode):
        w = linear.weight
        assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max().item() <= 2.0
    assert _model("breast", mode, "booster.proj_init=default").booster.encode.weight.std().item() == pytest.approx(
        _nn_linear_default_std(32), rel=0.05)


def test_3d_projections_default_to_nn_linear_init():
    booster = _model("adrenal3d", "mlp").booster
    assert booster.encode.weight.std().item() == pytest.approx(_nn_linear_default_std(32), rel=0.05)
    assert booster.decode.weight.std().item() == pytest.approx(_nn_linear_default_std(384), rel=0.05)
    trunc = _model("adrenal3d", "mlp", "booster.proj_init=trunc_normal").booster
    assert trunc.encode.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_projection_init_leaves_backbone_and_head_streams_alone():
    a, b = _model("breast", "rllm"), _model("breast", "rllm", "booster.proj_init=default")
    assert not torch.equal(a.booster.encode.weight, b.booster.encode.weight)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if not name.startswith("booster."):
            assert torch.equal(p, q), name
    none = _model("breast", "none")
    assert torch.equal(none.head.weight, a.head.weight)


# ------------------------------------------------------------------------------------ recipes and results


@pytest.mark.parametrize("key, value", [("booster.lm_norm", "pretrained"), ("booster.proj_init", "default")])
def test_booster_fidelity_keys_enter_the_run_id(key, value):
    a = load_recipe("breast", preset="cpu")
    b = load_recipe("breast", preset="cpu", sets=[f"{key}={value}"])
    assert a.run_id() != b.run_id() and json.loads(b.model_dump_json())["booster"][key.split(".")[1]] == value


@pytest.mark.parametrize("key, value", [("backbone.vivit_norms", "head"), ("backbone.vivit_pos", "factorised")])
def test_vivit_layout_keys_enter_the_run_id_and_are_refused_elsewhere(key, value):
    a = load_recipe("adrenal3d", preset="cpu", flags=[("--backbone", "backbone.name", "vivit-s")])
    b = load_recipe("adrenal3d", preset="cpu", flags=[("--backbone", "backbone.name", "vivit-s")],
                    sets=[f"{key}={value}"])
    assert a.run_id() != b.run_id()
    for task, backbone in (("adrenal3d", "vit3d"), ("breast", "vit-mini")):
        flags = [("--backbone", "backbone.name", backbone), ("--booster", "booster.mode", "none")]
        r = load_recipe(task, preset="cpu", flags=flags, sets=TINY_SETS + [f"{key}={value}"])
        with pytest.raises(MedboostError, match=rf"{key}={value} does not apply to backbone '{backbone}'.*unset it"):
            build_model(r, r.task_info)


def test_results_row_records_the_resolved_final_norm(tiny_llama, data_dir, results_dir):
    def run(mode, *sets):
        recipe = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", mode)],
                             sets=TINY_SETS + ["train.epochs=1", f"booster.llm={tiny_llama[0]}", "booster.layer=-1",
                                               *sets])
        return train(recipe, data_dir, results_dir, log=lambda *a: None)

    row = run("rllm")
    assert row["lm_norm"] == "unit" and json.loads(row["config_json"])["booster"]["lm_norm"] == "auto"
    assert run("rllm", "booster.lm_norm=none")["lm_norm"] == "none"
    assert run("none")["lm_norm"] is None
