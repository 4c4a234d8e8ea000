"""PneumoLLM (medboost_cli/models/pneumollm.py): the emitter's mask, RoPE and the LM stack against transformers, the
multi-token engine, the adapters, the trainable/frozen split, the paper's 2.70M trainable parameters at its shape,
the ablation switches, and a `medboost train --model pneumollm` run end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from medboost_cli.errors import MedboostError
from medboost_cli.models import build_model, count_parameters
from medboost_cli.models.backbones import build_backbone
from medboost_cli.models.families.pneumollm import model_options
from medboost_cli.models.llm import KNOWN_SPECS, build_block
from medboost_cli.models.llm_loading import LoadedStack, load_llm_layers
from medboost_cli.models.pneumollm import (
    AdaptedAttention,
    LMStack,
    PneumoLLM,
    RepAdapter,
    TokenEngine,
    emitter_mask,
)
from medboost_cli.recipes import BackboneConfig, PneumoLLMConfig, load_recipe

from .conftest import TINY_SETS, write_medmnist
from .test_cli import assert_one_line_error, run
from .test_llm_layer import _meta_from_hf

PNEUMO = [("--model", "model", "pneumollm")]


def _recipe(*sets: str, preset: str | None = "cpu", task: str = "breast"):
    return load_recipe(task, preset=preset, flags=PNEUMO, sets=TINY_SETS + list(sets))


def _stack(source: str, n_source: int, emitter: bool, rope: bool) -> LMStack:
    loaded = load_llm_layers(source, list(range(3)), norm="pretrained" if rope else "none", hf_rope_order=rope)
    return LMStack(loaded.blocks, loaded.norm, loaded.spec, n_source, emitter, rope).eval()


# ----------------------------------------------------------------------------------------- the emitter


def test_emitter_mask_is_eq_2():
    mask = emitter_mask(6, 4)
    additive = torch.zeros(6, 6).masked_fill(~mask, float("-inf"))
    assert (additive[:, :4] == 0).all() and (additive[:, 4:] == float("-inf")).all()  # M_ij = -inf for j > d


@pytest.fixture(params=["llama", "minilm"])
def stack_source(request, tiny_llama):
    """A tiny LLaMA with RoPE, or MiniLM's first three layers (BERT: no RoPE)."""
    return (str(tiny_llama[0]), True) if request.param == "llama" else ("minilm", False)


@pytest.mark.parametrize("diag", [0, 1])
def test_a_diagnosis_token_changes_no_other_tokens_output(stack_source, diag):
    source, rope = stack_source
    d, m = 3, 2
    stack = _stack(source, d, emitter=True, rope=rope)
    torch.manual_seed(0)
    y = torch.randn(2, d + m, stack.spec.hidden)
    bumped = y.clone()
    bumped[:, d + diag] += 3 * torch.randn(stack.spec.hidden)
    with torch.no_grad():
        a, b = stack(y), stack(bumped)
    others = [i for i in range(d + m) if i != d + diag]
    assert torch.allclose(a[:, others], b[:, others], atol=1e-6)
    assert not torch.allclose(a[:, d + diag], b[:, d + diag], atol=1e-3)  # its own output does change
    open_stack = _stack(source, d, emitter=False, rope=rope)  # without the emitter every token sees it
    with torch.no_grad():
        assert not torch.allclose(open_stack(y)[:, :d], open_stack(bumped)[:, :d], atol=1e-3)


def test_source_tokens_compute_as_if_the_diagnosis_tokens_were_absent(stack_source):
    source, rope = stack_source
    stack = _stack(source, 3, emitter=True, rope=rope)
    y = torch.randn(2, 5, stack.spec.hidden)
    with torch.no_grad():
        assert torch.allclose(stack(y)[:, :3], stack(y[:, :3]), atol=1e-5)


# ------------------------------------------------------------------------- the LM stack against transformers


def _reference_stack(model, y: torch.Tensor, n_source: int) -> torch.Tensor:
    """transformers' LLaMA: its layers with its own RoPE (positions 0..n-1) and the additive mask of Eq. 2, then its
    final norm."""
    b, n, _ = y.shape
    positions = torch.arange(n).expand(b, n)
    cos_sin = model.model.rotary_emb(y, positions)
    additive = torch.zeros(n, n).masked_fill(~emitter_mask(n, n_source), float("-inf")).expand(b, 1, n, n)
    h = y
    for layer in model.model.layers:
        out = layer(h, attention_mask=additive, position_embeddings=cos_sin, position_ids=positions)
        h = out[0] if isinstance(out, tuple) else out
    return model.model.norm(h)


@pytest.mark.parametrize("layout", ["hf", "meta"])
def test_llama_stack_with_rope_and_emitter_is_transformers_own(tiny_llama, tmp_path, layout):
    folder, model = tiny_llama
    source = str(folder) if layout == "hf" else str(_meta_from_hf(model, tmp_path / "meta", permute_back=True))
    stack = _stack(source, 3, emitter=True, rope=True)
    y = torch.randn(2, 6, 64)
    with torch.no_grad():
        assert torch.allclose(stack(y), _reference_stack(model, y, 3), atol=1e-5)
        no_rope = LMStack(list(stack.blocks), stack.norm, stack.spec, 3, True, rope=False)
        assert not torch.allclose(no_rope(y), stack(y), atol=1e-3)  # RoPE does act


def test_loaded_layers_are_read_once_each_and_random_layers_differ(tiny_llama, monkeypatch):
    import medboost_cli.models.checkpoint_hf as loading

    folder, _ = tiny_llama
    read = []
    real = loading.read_safetensors
    monkeypatch.setattr(loading, "read_safetensors", lambda path, keys, dtype: read.extend(keys) or real(path, keys, dtype))
    loaded = load_llm_layers(str(folder), [0, -1], dtype=torch.bfloat16, norm="pretrained")
    assert loaded.layers == [0, 2] and loaded.norm_kind == "pretrained"
    assert sorted(read) == sorted(set(read)) and {k.split(".")[2] for k in read if ".layers." in k} == {"0", "2"}
    assert all(p.dtype == torch.bfloat16 for b in loaded.blocks for p in b.parameters())
    randoms = load_llm_layers("random:minilm", [0, 1]).blocks
    assert not torch.equal(randoms[0].attn.q_proj.weight, randoms[1].attn.q_proj.weight)


# ----------------------------------------------------------------------------------- engine and adapters


def test_engine_weights_are_a_softmax_over_the_source_axis():
    torch.manual_seed(0)
    engine = TokenEngine(dim=16, tokens=4, hidden=12)
    x = torch.randn(3, 6, 16)
    with torch.no_grad():
        weights = engine.weights(x)
        assert weights.shape == (3, 6, 4) and (weights > 0).all()
        assert torch.allclose(weights.sum(dim=1), torch.ones(3, 4))  # each diagnosis token: a distribution over d
        expected = torch.einsum("bdm,bdn->bmn", weights, x)  # X^ = M^T X
        assert torch.allclose(engine(x), expected, atol=1e-6)
        assert torch.allclose(weights, engine.score(x).softmax(dim=1))


def test_adapter_starts_as_identity_and_groups_like_a_conv1d():
    torch.manual_seed(0)
    adapter = RepAdapter(16, hidden=8, groups=2, dropout=0.1).eval()
    x = torch.randn(2, 5, 16)
    assert torch.equal(adapter(x), x)
    with torch.no_grad():
        adapter.up_weight.normal_()
        adapter.up_bias.normal_()
        conv_up = torch.nn.Conv1d(8, 16, 1, groups=2)  # the released code's up-projection
        conv_up.weight.copy_(adapter.up_weight.reshape(16, 4, 1))
        conv_up.bias.copy_(adapter.up_bias)
        hidden = adapter.down(x)
        expected = x + conv_up(hidden.transpose(1, 2)).transpose(1, 2)
        assert torch.allclose(adapter(x), expected, atol=1e-5)


def test_adapters_leave_the_model_unchanged_at_init():
    """Every part but the adapters starts from the same weights, with or without them (seeded per part)."""
    x = torch.rand(2, 3, 28, 28)
    outputs = []
    for adapters in (True, False):
        recipe = _recipe(f"pneumollm.adapters={str(adapters).lower()}")
        model = build_model(recipe, recipe.task_info).model.eval()
        with torch.no_grad():
            outputs.append(model(x))
        assert any(isinstance(m, AdaptedAttention) for m in model.modules()) == adapters
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)


# ------------------------------------------------------------------------------- trainable and frozen parts


def test_trainable_parts_are_the_adapters_engine_projector_and_head():
    recipe = _recipe("pneumollm.freeze_vision=true")
    built = build_model(recipe, recipe.task_info)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    parts = {n.split(".adapter.")[0].split(".")[0] if ".adapter." not in n else "adapter" for n in trainable}
    assert parts == {"adapter", "engine", "project", "head"}
    assert {n for n in trainable if ".adapter." in n and n.startswith("lm.")}  # in the LM layers
    assert {n for n in trainable if ".adapter." in n and n.startswith("backbone.")}  # and in the ViT blocks
    assert built.frozen_sha256 and built.stack.layers == list(range(6))  # MiniLM: all six layers
    unfrozen = build_model(_recipe(), recipe.task_info)  # the CPU preset trains its from-scratch ViT
    assert unfrozen.model.backbone.vit.patch_embed.proj[0].weight.requires_grad
    assert unfrozen.frozen_sha256 != built.frozen_sha256  # the frozen ViT is part of the hash only when frozen
    assert not any(p.requires_grad for p in unfrozen.model.lm.blocks[0].attn.attention.parameters())


def _meta_paper_model(**keys) -> PneumoLLM:
    """The paper's shapes on the meta device: CLIP ViT-L/14 (24 blocks, width 1024) and LLaMA-7B (32 layers)."""
    cfg = PneumoLLMConfig(**keys)
    spec = KNOWN_SPECS["llama-7b"]
    with torch.device("meta"):
        vit = build_backbone(BackboneConfig(name="clip-l14"), 2)
        stack = LoadedStack([build_block(spec) for _ in range(32)], None, spec, "random:llama-7b", list(range(32)),
                            "", "pretrained") if cfg.llm else None
        return PneumoLLM(vit, stack, spec.hidden, 2, model_options(cfg))


def test_trainable_parameters_at_the_papers_shape_are_its_2_70m(capsys):
    total, trainable = count_parameters(_meta_paper_model())
    assert f"{trainable / 1e6:.2f}M" == "2.70M"  # Tables 2-4: 2.70M learnable parameters
    assert trainable == 24 * 13_320 + 32 * 53_256 + 12_352 + 659_584 + 8_192
    simplified = count_parameters(_meta_paper_model(engine=False, emitter=False))[1]
    assert f"{simplified / 1e6:.2f}M" == "2.69M"  # Table 5: simplified PneumoLLM, 2.69M
    with capsys.disabled():
        print(f"\nPneumoLLM at the paper's shape: {total / 1e9:.3f}B parameters, {trainable:,} trainable "
              f"({trainable / 1e6:.2f}M); simplified {simplified:,}")


# ------------------------------------------------------------------------------------------- ablations


ABLATIONS = {  # the paper's switch -> (engine, adapters, emitter, LM layers)
    "baseline": (["pneumollm.engine=false", "pneumollm.emitter=false", "pneumollm.adapters=false"],
                 (False, False, False, True)),
    "adapter": (["pneumollm.engine=false", "pneumollm.emitter=false"], (False, True, False, True)),
    "engine": (["pneumollm.emitter=false"], (True, True, False, True)),
    "full": ([], (True, True, True, True)),
    "no-llm": (["pneumollm.llm=false", "pneumollm.emitter=false"], (True, True, False, False)),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_switch_changes_the_structure_as_the_paper_says(name):
    sets, (engine, adapters, emitter, lm) = ABLATIONS[name]
    recipe = _recipe(*sets)
    model = build_model(recipe, recipe.task_info).model
    assert (model.engine is not None, any(isinstance(m, RepAdapter) for m in model.modules())) == (engine, adapters)
    assert (model.lm is not None) == lm and (model.lm.emitter if lm else False) == emitter
    if adapters and lm:
        assert all(isinstance(b.attn, AdaptedAttention) for b in model.lm.blocks)
    x = torch.rand(2, 3, 28, 28)
    assert model.tokens(x).shape[1] == model.n_source + (4 if engine else 0)
    assert model(x).shape == (2, 2)


@pytest.mark.parametrize("m", [1, 8])
def test_number_of_diagnosis_tokens(m):
    recipe = _recipe(f"pneumollm.tokens={m}", "pneumollm.source_every=1", "backbone.depth=2")
    model = build_model(recipe, recipe.task_info).model
    assert model.n_source == 2 and model.tokens(torch.rand(1, 3, 28, 28)).shape[1] == 2 + m


def test_source_tokens_are_the_cls_of_every_kth_block():
    recipe = _recipe("backbone.depth=4", "pneumollm.source_every=2")
    model = build_model(recipe, recipe.task_info).model.eval()
    vit, x = model.backbone.vit, torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        h, cls = model.backbone.embed(x), []
        for block in vit.blocks:
            h = block(h)
            cls.append(h[:, 0])
        assert torch.equal(model.tokens(x)[:, :2], torch.stack([cls[1], cls[3]], dim=1))  # residual stream
        model.source_norm = "ln_post"
        assert torch.allclose(model.tokens(x)[:, :2], vit.norm(torch.stack([cls[1], cls[3]], dim=1)))


@pytest.mark.parametrize("sets, message", [
    (["pneumollm.engine=false"], "pneumollm.emitter=true needs pneumollm.engine=true"),
    (["pneumollm.rope=true"], "pneumollm.rope=true applies RoPE.*set pneumollm.rope=false"),
    (["booster.freeze=false"], "booster.freeze=false: PneumoLLM keeps its LM frozen"),
    (["pneumollm.llm_layers=9"], "pneumollm.llm_layers=9: the LM has only 6 layers"),
    (["pneumollm.final_norm=unit"], "pneumollm.final_norm=unit is for LMs with a final norm"),
])
def test_inconsistent_switches_are_clear_errors(sets, message):
    with pytest.raises(MedboostError, match=message):
        recipe = _recipe(*sets)
        build_model(recipe, recipe.task_info)


def test_rllm_runs_keep_their_hash_and_pneumollm_hashes_its_own_keys():
    epoch_cpu = ["train.steps=null", "train.val_subset=null"]  # the CPU preset before its step budget
    rllm = load_recipe("breast", preset="cpu", sets=epoch_cpu)
    assert rllm.config_hash() == load_recipe("breast", preset="cpu",
                                             sets=["pneumollm.tokens=7", *epoch_cpu]).config_hash()
    assert rllm.run_id() == "breast-vit-mini-rllm-68150a46-s0"  # its id from before the model keys existed
    pneumo = _recipe()
    assert "-pneumollm-" in pneumo.run_id()
    assert pneumo.config_hash() != _recipe("pneumollm.tokens=7").config_hash()
    assert pneumo.config_hash() == _recipe("booster.layer=2", "booster.mode=none").config_hash()  # unread keys


def test_model_family_defaults_come_between_the_base_and_the_task_recipe():
    paper = load_recipe("pneumonia", flags=PNEUMO)
    assert (paper.backbone.name, paper.data.size, paper.train.lr, paper.train.batch_size) == ("clip-l14", 224, 3e-4, 16)
    assert paper.booster.llm == "huggyllama/llama-7b" and paper.pneumollm.rope and paper.pneumollm.source_every == 4
    cpu = load_recipe("pneumonia", preset="cpu", flags=PNEUMO)
    assert (cpu.backbone.name, cpu.booster.llm, cpu.pneumollm.freeze_vision, cpu.pneumollm.rope) == (
        "vit-mini", "minilm", False, False)
    with pytest.raises(MedboostError, match="--model pneumollm: model=pneumollm takes 2D images; adrenal3d is 3D"):
        load_recipe("adrenal3d", preset="cpu", flags=PNEUMO)


# ------------------------------------------------------------------------------------------ end to end


def test_medboost_train_model_pneumollm_writes_a_completed_row(tmp_path):
    data, results = tmp_path / "data", tmp_path / "results"
    write_medmnist(data, "breast")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    result = run("train", "breast", "--model", "pneumollm", "--preset", "cpu", "--data-dir", data, "--results-dir",
                 results, "--quiet", "--json", *sets)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["status"] == "completed" and row["booster"] == "pneumollm" and row["llm"] == "minilm"
    assert row["run_id"].startswith("breast-vit-mini-pneumollm-") and row["lm_norm"] == "none"
    assert 0 < row["params_trainable"] < row["params_total"] and row["frozen_sha256"]
    saved = pd.read_parquet(results / "runs" / f"{row['run_id']}.parquet").iloc[0]
    assert json.loads(saved["config_json"])["model"] == "pneumollm" and len(saved["test_scores"]) == 24
    again = run("evaluate", row["run_id"], "--data-dir", data, "--results-dir", results)
    assert again.returncode == 0, again.stderr
    assert f"{row['test_auc']:.4f}" in again.stdout.split("now")[1].split("\n")[0]  # the checkpoint reloads


def test_bad_model_name_is_a_one_line_error(tmp_path):
    result = run("train", "breast", "--model", "llava", "--preset", "cpu", "--data-dir", tmp_path)
    assert_one_line_error(result, "--model llava", "'model'", code=2)


def test_grad_cam_pairs_refuse_pneumollm_runs_and_bench_compares_its_variants():
    from medboost_cli.bench import bench_names, bench_recipe
    from medboost_cli.gradcam import partner_run_id

    recipe = _recipe()
    with pytest.raises(MedboostError, match="Grad-CAM pairs a backbone with its booster run; .* is a pneumollm run"):
        partner_run_id({"config_json": recipe.model_dump_json(), "run_id": recipe.run_id()})
    # a recipe that says model=pneumollm (here through --set) is benched by variant (tests/test_bench.py)
    assert bench_names(bench_recipe("breast", None, None, 4, ["model=pneumollm"], preset="cpu"), [], []) == [
        "pneumollm", "no-llm"]


def test_a_switch_that_needs_another_is_a_one_line_error_naming_both(tmp_path):
    result = run("train", "breast", "--model", "pneumollm", "--preset", "cpu", "--set", "pneumollm.llm=false",
                 "--data-dir", tmp_path)
    assert_one_line_error(result, "--set pneumollm.llm=false: pneumollm.emitter=true needs pneumollm.engine=true and "
                          "pneumollm.llm=true", "set pneumollm.emitter=false", code=2)
    assert "'source_every'" not in result.stderr  # not the whole section
