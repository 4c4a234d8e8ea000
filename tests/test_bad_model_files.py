"""Damaged or hostile model files, as `medboost train --llm FOLDER` meets them: one line naming the file and the
problem, exit code 4, no traceback, nothing allocated from the bad numbers and nothing lost in the results folder.

Each case damages one file of a copy of a valid tiny checkpoint (the conftest LLaMA in Hugging Face single-file,
sharded and Meta layouts) and retrains, with ``--force``, a run whose completed result is already in the results
folder: the bad file must stop the run before anything is written, and the completed result must survive byte for
byte.
"""

from __future__ import annotations

import json
import shutil
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medboost_cli.models.llm_loading import load_llm_layer
from medboost_cli.recipes import load_recipe
from medboost_cli.results import ResultsDir, new_row, write_row

from .conftest import TINY_SETS, write_medmnist
from .test_cli import assert_one_line_error, run
from .test_llm_layer import _copy_checkpoint, _meta_from_hf

Q = "model.layers.2.self_attn.q_proj.weight"  # a tensor of the layer the cpu preset reads (-1: the last of 3)
ST, CONFIG, INDEX = "model.safetensors", "config.json", "model.safetensors.index.json"
# Python-level allocations while the command runs (tracemalloc sees every buffer Python asks for, also one the OS
# would only map lazily): building the tiny model and reading the tiny data stay far below this.
PEAK_TRACED_BYTES = 16 * 2**20


# ------------------------------------------------------------------------------------------- how to damage


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def write_header(path: Path, header, data: bytes | None = None) -> Path:
    """Rewrite ``path``'s header (a JSON value, or raw bytes), keeping its data section."""
    data = split_safetensors(path)[1] if data is None else data
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def edit_entry(lm: Path, **changes) -> Path:
    """Change (or, with None, delete) fields of tensor Q's header entry."""
    header, data = split_safetensors(lm / ST)
    for field, value in changes.items():
        if value is None:
            del header[Q][field]
        else:
            header[Q][field] = value(header[Q]) if callable(value) else value
    return write_header(lm / ST, header, data)


def data_bytes(lm: Path) -> int:
    return len(split_safetensors(lm / ST)[1])


def edit_json(path: Path, edit: Callable[[dict], object]) -> Path:
    """Replace the JSON object in ``path`` by ``edit(that object)``."""
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return path


def config_with(**changes) -> Callable[[Path], Path]:
    return lambda lm: edit_json(lm / CONFIG, lambda c: {**c, **changes})


def without(key: str) -> Callable[[dict], dict]:
    return lambda d: {k: v for k, v in d.items() if k != key}


def write_torch(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def wrong_shard(lm: Path) -> Path:
    """The index puts Q in a shard that does not hold it."""
    def edit(index):
        index["weight_map"][Q] = next(f for f in index["weight_map"].values() if f != index["weight_map"][Q])
        return index
    edit_json(lm / INDEX, edit)
    return lm / json.loads((lm / INDEX).read_text())["weight_map"][Q]


def mismatched_meta_part(lm: Path) -> Path:
    """Rank 1's slice of wo (split along dim 1) has a different number of rows than rank 0's."""
    state = torch.load(lm / "consolidated.01.pth", weights_only=True)
    state["layers.2.attention.wo.weight"] = torch.zeros(60, 32)
    torch.save(state, lm / "consolidated.01.pth")
    return lm


def pytorch_bin(obj) -> Callable[[Path], Path]:
    def damage(lm: Path) -> Path:
        (lm / ST).unlink()
        return write_torch(lm / "pytorch_model.bin", obj)
    return damage


def truncate(name: str, keep: Callable[[int], int]) -> Callable[[Path], Path]:
    def damage(lm: Path) -> Path:
        raw = (lm / name).read_bytes()
        (lm / name).write_bytes(raw[: keep(len(raw))])
        return lm / name
    return damage


CHECKPOINT = "checkpoint"  # the base whose bad file is the run's own last.pt (train --resume), not an LM file

# id -> (base checkpoint, damage(copy of the base) -> the bad file, what the error line must say)
CASES: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    # safetensors: the header's length field, its JSON, each tensor entry
    "length-2^40": ("hf", lambda lm: _set_length(lm, 2**40), "header length field says 1099511627776 bytes"),
    "length-past-end": ("hf", lambda lm: _set_length(lm, 2**31), "header length field says 2147483648 bytes"),
    "shorter-than-8-bytes": ("hf", truncate(ST, lambda n: 5), "not a readable safetensors file (5 bytes"),
    "header-not-json": ("hf", lambda lm: write_header(lm / ST, b"{not json"), "not a readable safetensors file"),
    "header-deeply-nested": ("hf", lambda lm: write_header(lm / ST, b"[" * 100_000), "not a readable safetensors"),
    "header-json-list": ("hf", lambda lm: write_header(lm / ST, [1, 2]), "header is a JSON list, not an object"),
    "metadata-a-list": ("hf", lambda lm: write_header(lm / ST, {"__metadata__": []}), "'__metadata__' is not an"),
    "entry-a-string": ("hf", lambda lm: write_header(lm / ST, {**split_safetensors(lm / ST)[0], Q: "F32"}),
                       f"tensor {Q}: bad entry: 'F32'"),
    "entry-missing-dtype": ("hf", lambda lm: edit_entry(lm, dtype=None), f"tensor {Q}: lacks 'dtype'"),
    "entry-missing-offsets": ("hf", lambda lm: edit_entry(lm, data_offsets=None), "lacks 'data_offsets'"),
    "entry-extra-field": ("hf", lambda lm: edit_entry(lm, strides=[1]), f"tensor {Q}: bad 'strides'"),
    "unknown-dtype": ("hf", lambda lm: edit_entry(lm, dtype="F7"), "dtype 'F7' is not one of F64, F32"),
    "negative-shape": ("hf", lambda lm: edit_entry(lm, shape=[-64, 64]), f"tensor {Q}: bad 'shape.0': -64"),
    "float-shape": ("hf", lambda lm: edit_entry(lm, shape=[64.0, 64]), f"tensor {Q}: bad 'shape.0': 64.0"),
    "shape-a-string": ("hf", lambda lm: edit_entry(lm, shape="64x64"), f"tensor {Q}: bad 'shape'"),
    "huge-shape": ("hf", lambda lm: edit_entry(lm, shape=[2**40, 2**40]), "needs 4835703278458516698824704 bytes"),
    "shape-mismatching-bytes": ("hf", lambda lm: edit_entry(lm, shape=[64, 63]),
                                "needs 16128 bytes but its data_offsets span 16384"),
    "offsets-past-the-data": ("hf", lambda lm: edit_entry(lm, data_offsets=lambda e: [e["data_offsets"][0],
                              data_bytes(lm) + 4096]), f"tensor {Q} is cut short"),
    "offsets-backwards": ("hf", lambda lm: edit_entry(lm, data_offsets=lambda e: e["data_offsets"][::-1]),
                          "run backwards"),
    "offsets-negative": ("hf", lambda lm: edit_entry(lm, data_offsets=[-1, 16383]), "bad 'data_offsets.0': -1"),
    "offsets-three-ints": ("hf", lambda lm: edit_entry(lm, data_offsets=[0, 1, 2]), "bad 'data_offsets'"),
    "truncated-data": ("hf", truncate(ST, lambda n: n - 1000), "is cut short"),
    # config.json
    "config-not-json": ("hf", lambda lm: _write(lm / CONFIG, "{'model_type': 'llama'"), "cannot be read as JSON"),
    "config-a-list": ("hf", lambda lm: edit_json(lm / CONFIG, lambda c: [c]), "holds a JSON list, not an object"),
    "config-a-string": ("hf", lambda lm: edit_json(lm / CONFIG, lambda c: "llama"), "holds a JSON string"),
    "config-missing-size": ("hf", lambda lm: edit_json(lm / CONFIG, without("intermediate_size")),
                            "lacks 'intermediate_size'"),
    "zero-heads": ("hf", config_with(num_attention_heads=0), "bad 'num_attention_heads': 0 (Input should be greater"),
    "negative-layers": ("hf", config_with(num_hidden_layers=-3), "bad 'num_hidden_layers': -3"),
    "float-size": ("hf", config_with(hidden_size=64.5), "bad 'hidden_size': 64.5"),
    "string-size": ("hf", config_with(hidden_size="64"), "bad 'hidden_size': '64'"),
    "boolean-size": ("hf", config_with(intermediate_size=True), "bad 'intermediate_size': True"),
    "list-size": ("hf", config_with(hidden_size=[64]), "bad 'hidden_size': [64]"),
    "huge-size": ("hf", config_with(hidden_size=2**40), "bad 'hidden_size': 1099511627776"),
    "huge-layer": ("hf", config_with(hidden_size=2**20, intermediate_size=2**20, num_attention_heads=2**10,
                                     num_key_value_heads=2**10), "parameters, over the"),
    "heads-not-dividing-width": ("hf", config_with(num_attention_heads=5, num_key_value_heads=5),
                                 "num_attention_heads=5 does not divide hidden_size=64"),
    "kv-heads-not-dividing-heads": ("hf", config_with(num_key_value_heads=3),
                                    "num_key_value_heads=3 does not divide num_attention_heads=4"),
    "nan-eps": ("hf", config_with(rms_norm_eps=float("nan")), "bad 'rms_norm_eps': nan"),
    "negative-eps": ("hf", config_with(rms_norm_eps=-1e-6), "bad 'rms_norm_eps': -1e-06"),
    "zero-rope-theta": ("hf", config_with(rope_theta=0), "bad 'rope_theta': 0"),
    "model-type-a-list": ("hf", config_with(model_type=["llama"]), "model_type ['llama'] is not supported"),
    "model-type-unregistered": ("hf", config_with(model_type="gpt2"), "model_type 'gpt2' is not supported; medboost "
                                "reads the LM families llama (llama, mistral, qwen2), bert (bert), phi (phi)"),
    "phi-qk-layernorm": ("hf", config_with(model_type="phi", hidden_act="gelu_new", qk_layernorm=True),
                         "qk_layernorm=true is not supported"),
    # the shard index
    "index-not-json": ("sharded", lambda lm: _write(lm / INDEX, "weight_map"), "cannot be read as JSON"),
    "weight-map-a-list": ("sharded", lambda lm: edit_json(lm / INDEX, lambda i: {**i, "weight_map": []}),
                          "'weight_map' is [], not a mapping"),
    "weight-map-missing": ("sharded", lambda lm: edit_json(lm / INDEX, without("weight_map")),
                           "'weight_map' is None"),
    "shard-outside-the-folder": ("sharded", lambda lm: edit_json(lm / INDEX, lambda i: {**i, "weight_map": {
        **i["weight_map"], Q: "../../elsewhere.safetensors"}}), "not a .safetensors or .bin file name in the same"),
    "shard-not-a-string": ("sharded", lambda lm: edit_json(lm / INDEX, lambda i: {**i, "weight_map": {Q: 3}}),
                           f"tensor {Q} maps to 3"),
    "index-names-the-wrong-shard": ("sharded", wrong_shard, f"has no tensor {Q}, which the index file says it holds"),
    # Meta layout: params.json and consolidated.NN.pth
    "params-missing-layers": ("meta", lambda lm: edit_json(lm / "params.json", without("n_layers")),
                              "lacks 'n_layers'"),
    "params-a-list": ("meta", lambda lm: edit_json(lm / "params.json", lambda p: list(p)), "holds a JSON list"),
    "params-string-heads": ("meta", lambda lm: edit_json(lm / "params.json", lambda p: {**p, "n_heads": "4"}),
                            "bad 'n_heads': '4'"),
    "params-heads-not-dividing-dim": ("meta", lambda lm: edit_json(lm / "params.json", lambda p: {
        **p, "n_heads": 6, "n_kv_heads": 6}), "n_heads=6 does not divide dim=64"),
    "pth-not-a-dict": ("meta", lambda lm: write_torch(lm / "consolidated.00.pth", [torch.zeros(2)]),
                       "holds a list, not a dict"),
    "pth-a-number-not-a-tensor": ("meta", lambda lm: write_torch(lm / "consolidated.00.pth", {"layers.2.x": 3}),
                                  "entry 'layers.2.x' is a int, not a named tensor"),
    "pth-truncated": ("meta", truncate("consolidated.00.pth", lambda n: n // 2), "cannot be loaded ("),
    "pth-not-torch": ("meta", lambda lm: _write(lm / "consolidated.00.pth", "hello"), "cannot be loaded ("),
    "pth-parts-not-fitting": ("meta2", mismatched_meta_part, "parts of layers.2.attention.wo.weight do not fit"),
    "bin-not-a-dict": ("hf", pytorch_bin("a string"), "holds a str, not a dict"),
    # the run's own checkpoint, read by --resume
    "checkpoint-not-a-dict": (CHECKPOINT, lambda path: write_torch(path, [1, 2, 3]), "holds a list, not a dict"),
    "checkpoint-truncated": (CHECKPOINT, lambda path: write_torch(path, {"format": 1}) and
                             truncate(path.name, lambda n: n - 20)(path.parent), "cannot be loaded ("),
}


def _set_length(lm: Path, length: int) -> Path:
    raw = (lm / ST).read_bytes()
    (lm / ST).write_bytes(struct.pack("<Q", length) + raw[8:])
    return lm / ST


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def bases(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """The valid checkpoints each case damages a copy of: they load (so each error below comes from its damage)."""
    root = tmp_path_factory.mktemp("bases")
    folder, model = tiny_llama
    hf, tensors = _copy_checkpoint(folder, root / "hf")
    save_file(tensors, hf / ST)
    found = {"hf": hf, "sharded": folder, "meta": _meta_from_hf(model, root / "meta"),
             "meta2": _meta_from_hf(model, root / "meta2", shards=2)}
    for path in found.values():
        assert load_llm_layer(str(path), -1).layer == 2
    return found


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("medmnist")
    write_medmnist(root, "breast")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_model_file_stops_the_run_with_one_line_and_exit_code_4(name, bases, data_dir, tmp_path):
    base, damage, fragment = CASES[name]
    lm = "minilm" if base == CHECKPOINT else tmp_path / "lm"
    if base != CHECKPOINT:
        shutil.copytree(bases[base], lm)
    flags = [("--llm", "booster.llm", str(lm))]
    sets = [*TINY_SETS, "booster.mode=rllm"]
    recipe = load_recipe("breast", preset="cpu", flags=flags, sets=sets)  # the run the command below trains
    results = ResultsDir(tmp_path / "results")
    completed = new_row(run_id=recipe.run_id(), status="completed", task="breast", seed=0, test_auc=0.8125)
    write_row(results.root, completed)  # a finished result of this very run, which --force would replace
    results.last(recipe.run_id()).parent.mkdir(parents=True)
    bad = damage(results.last(recipe.run_id()) if base == CHECKPOINT else lm)
    before = snapshot(results.root)

    tracemalloc.start()
    try:
        result = run("train", "breast", "--preset", "cpu", "--llm", lm, *(a for s in sets for a in ("--set", s)),
                     "--data-dir", data_dir, "--results-dir", results.root, "--force", "--quiet",
                     *(["--resume"] if base == CHECKPOINT else []))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert_one_line_error(result, str(bad), fragment, code=4)
    assert snapshot(results.root) == before  # the completed result (and anything else there) untouched
    assert peak < PEAK_TRACED_BYTES, f"{peak / 2**20:.0f} MiB allocated before the error"
