"""The Phi LM family (models/lm/phi.py): one layer of a microsoft/phi-2-layout checkpoint against transformers'
PhiDecoderLayer (no causal mask, rotary dropped), read alone from sharded safetensors, its final LayerNorm, its
config checks, and a booster run with it end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medboost_cli.errors import MedboostError
from medboost_cli.models.llm import KNOWN_SPECS, build_block, layer_flops, layer_params
from medboost_cli.models.llm_loading import load_llm_layer, load_llm_layers
from medboost_cli.models.pneumollm import LMStack

from .conftest import TINY_SETS, write_medmnist
from .test_cli import assert_one_line_error, run


@pytest.fixture(scope="module")
def tiny_phi(tmp_path_factory) -> tuple[Path, object]:
    """A 3-layer Phi (partial rotary 0.5, phi-2's layout) saved as sharded safetensors with an index file."""
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=3,
                       vocab_size=50, layer_norm_eps=1e-5, partial_rotary_factor=0.5, attn_implementation="eager")
    model = PhiForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrongly mapped one shows
        for norm in [layer.input_layernorm for layer in model.model.layers] + [model.model.final_layernorm]:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        for name, p in model.model.layers.named_parameters():
            if name.endswith("bias") and "layernorm" not in name:
                p.uniform_(-0.1, 0.1)
    folder = tmp_path_factory.mktemp("tiny-phi")
    model.save_pretrained(folder, max_shard_size="40KB", safe_serialization=True)
    assert (folder / "model.safetensors.index.json").exists()
    return folder, model


def reference(layer, x: torch.Tensor) -> torch.Tensor:
    """transformers' PhiDecoderLayer without rotation (cos 1, sin 0 on its rotary dims) and without a mask."""
    b, n, _ = x.shape
    rotary = layer.self_attn.rotary_ndims
    out = layer(x, attention_mask=torch.zeros(b, 1, n, n), position_embeddings=(torch.ones(b, n, rotary),
                                                                                torch.zeros(b, n, rotary)))
    return out[0] if isinstance(out, tuple) else out


def test_phi_layer_is_transformers_phi_decoder_layer(tiny_phi):
    folder, model = tiny_phi
    loaded = load_llm_layer(str(folder), 2)
    assert loaded.spec.arch == "phi" and loaded.layer == 2 and loaded.norm == "none"
    theirs = {k.replace("self_attn.dense", "self_attn.o_proj"): v
              for k, v in model.model.layers[2].state_dict().items()}
    ours = loaded.block.state_dict()
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.block(x), reference(model.model.layers[2], x), atol=1e-5)


def test_phi_layer_is_bidirectional_and_runs_attention_and_mlp_in_parallel(tiny_phi):
    folder, _ = tiny_phi
    block = load_llm_layer(str(folder), 1).block
    x = torch.randn(1, 6, 64)
    y = x.clone()
    y[:, -1] += torch.randn(64)  # not a constant shift, which the LayerNorm would remove
    perm = torch.randperm(6)
    with torch.no_grad():
        assert not torch.allclose(block(x)[:, 0], block(y)[:, 0], atol=1e-4)  # the last token reaches the first
        assert torch.allclose(block(x)[:, perm], block(x[:, perm]), atol=1e-5)  # and no position is seen
        h = block.input_layernorm(x)
        assert torch.allclose(block(x), x + block.self_attn(h) + block.mlp(h), atol=1e-6)
    with pytest.raises(ValueError, match="without their partial rotary"):
        block(x, rope=(torch.ones(6, 16), torch.zeros(6, 16)))


def test_only_the_layers_tensors_are_read_from_their_shards(tiny_phi, monkeypatch):
    """The LLaMA loader's bound: the layer's own tensors, each once, from the shards that hold them; with the
    pretrained final norm, its weight and bias and nothing else."""
    import medboost_cli.models.checkpoint_hf as loading

    folder, _ = tiny_phi
    read: list[tuple[str, str]] = []
    real = loading.read_safetensors

    def spy(path, keys, dtype):
        read.extend((Path(path).name, k) for k in keys)
        return real(path, keys, dtype)

    monkeypatch.setattr(loading, "read_safetensors", spy)
    load_llm_layer(str(folder), 1)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    layer = {k: f for k, f in index.items() if k.startswith("model.layers.1.")}
    assert sorted(read) == sorted((f, k) for k, f in layer.items())
    assert len(set(layer.values())) < len(set(index.values()))  # other shards exist and stay closed
    read.clear()
    load_llm_layer(str(folder), 1, norm="pretrained")
    extra = sorted(k for _, k in read if k not in layer)
    assert extra == ["model.final_layernorm.bias", "model.final_layernorm.weight"]


def test_final_layernorm_unit_pretrained_and_auto(tiny_phi):
    folder, model = tiny_phi
    x = torch.randn(2, 4, 64) * 3
    final = model.model.final_layernorm
    with torch.no_grad():
        bare = reference(model.model.layers[2], x)
        pretrained = load_llm_layer(str(folder), -1, norm="pretrained")
        assert torch.allclose(pretrained.block(x), final(bare), atol=1e-5)
        unit = load_llm_layer(str(folder), -1, norm="unit")
        out = unit.block(x)
        assert torch.allclose(out, torch.nn.functional.layer_norm(bare, (64,), eps=1e-5), atol=1e-5)
        assert torch.equal(unit.block.norm.bias, torch.zeros(64)) and unit.block.norm.eps == 1e-5
    auto = load_llm_layer(str(folder), -1, norm="auto")
    assert auto.norm == "unit" and auto.sha256 == unit.sha256
    assert len({unit.sha256, pretrained.sha256, load_llm_layer(str(folder), -1).sha256}) == 3


def test_random_and_shuffled_phi_layers(tiny_phi):
    folder = str(tiny_phi[0])
    random = load_llm_layer(folder, 1, init="random", norm="pretrained")
    state = random.block.state_dict()
    assert state["layer.self_attn.q_proj.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(state["layer.input_layernorm.weight"], torch.ones(64))
    assert torch.equal(state["layer.mlp.fc1.bias"], torch.zeros(96))
    assert torch.equal(state["norm.bias"], torch.zeros(64))
    shuffled = load_llm_layer(folder, 1, init="shuffled")
    assert shuffled.sha256 != load_llm_layer(folder, 1).sha256


def test_phi_shape_counts_match_transformers():
    from transformers import PhiConfig
    from transformers.models.phi.modeling_phi import PhiDecoderLayer

    spec = KNOWN_SPECS["phi-2"]  # microsoft/phi-2's config: 2560 wide, 10240 MLP, 32 heads of 80, 32 layers
    config = PhiConfig(hidden_size=2560, intermediate_size=10240, num_attention_heads=32, num_hidden_layers=32,
                       partial_rotary_factor=0.4)
    with torch.device("meta"):
        theirs = sum(p.numel() for p in PhiDecoderLayer(config, 0).parameters())
        ours = sum(p.numel() for p in build_block(spec).parameters())
    assert layer_params(spec) == theirs == ours == 78_671_360
    mlp = 2 * 197 * 2560 * 10240 * 2  # fc1 and fc2
    assert layer_flops(spec, 197) == 2 * 197 * 4 * 2560 * 2560 + 4 * 197 * 197 * 2560 + mlp


@pytest.mark.parametrize("change, fragment", [
    ({"qk_layernorm": True}, "qk_layernorm=true is not supported"),
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported (Phi uses gelu_new)"),
    ({"partial_rotary_factor": 2.0}, "bad 'partial_rotary_factor': 2.0"),
    ({"layer_norm_eps": -1.0}, "bad 'layer_norm_eps': -1.0"),
    ({"num_attention_heads": 5}, "num_attention_heads=5 does not divide hidden_size=64"),
])
def test_a_bad_phi_config_is_one_line(tiny_phi, tmp_path, change, fragment):
    folder = tmp_path / "phi"
    folder.mkdir()
    config = json.loads((tiny_phi[0] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(MedboostError, match="model file|config.json") as caught:
        load_llm_layer(str(folder), 0)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_pneumollm_stack_of_phi_layers_takes_the_emitter_mask_and_refuses_rope(tiny_phi):
    folder = str(tiny_phi[0])
    loaded = load_llm_layers(folder, [0, 1, 2], norm="pretrained")
    stack = LMStack(loaded.blocks, loaded.norm, loaded.spec, n_source=3, emitter=True, rope=False).eval()
    y = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.allclose(stack(y)[:, :3], stack(y[:, :3]), atol=1e-5)  # diagnosis tokens are not seen
    from medboost_cli.models.pneumollm import resolve_final_norm

    assert resolve_final_norm("auto", loaded.spec) == "pretrained"


def test_booster_run_with_a_tiny_phi_checkpoint_completes(tiny_phi, tmp_path):
    data, results = tmp_path / "data", tmp_path / "results"
    write_medmnist(data, "breast")
    sets = [a for s in TINY_SETS + ["train.epochs=1", f"booster.llm={tiny_phi[0]}"] for a in ("--set", s)]
    result = run("train", "breast", "--preset", "cpu", "--booster", "rllm", "--data-dir", data, "--results-dir",
                 results, "--quiet", "--json", *sets)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["status"] == "completed" and row["booster"] == "rllm" and row["llm"] == str(tiny_phi[0])
    assert row["lm_norm"] == "unit" and row["layer"] == 2 and row["frozen_sha256"]
    pneumo = run("train", "breast", "--model", "pneumollm", "--preset", "cpu", "--data-dir", data, "--results-dir",
                 results, "--quiet", *sets, "--set", "pneumollm.rope=true")
    assert_one_line_error(pneumo, "pneumollm.rope=true applies RoPE", "phi family", code=2)
