"""A Hugging Face hub id as an LM source: the config, the shard index and only the shard(s) holding the
requested tensors are fetched (or found in the local cache), then read as a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from ..hub import cached_file, ensure_reachable
from .checkpoint_hf import Source, final_norm_keys, hf_files, layer_keys, read_hf_final_norm, read_hf_layer
from .lm import LayerSpec, hf_layer_spec
from .untrusted import first_line, read_json_object, weight_map


def _fetcher(repo: str):
    from huggingface_hub import hf_hub_download

    def fetch(filename: str, required: bool = True) -> Path | None:
        cached = cached_file(repo, filename)
        if cached is not None:
            return cached
        ensure_reachable(f"'{repo}'", "download the checkpoint elsewhere and set booster.llm to its local folder "
                         "(or use booster.llm=minilm offline)")
        try:
            return Path(hf_hub_download(repo, filename))
        except Exception as e:
            if not required and "EntryNotFound" in type(e).__name__:
                return None
            raise ModelFileError(
                f"could not fetch {filename} of '{repo}' from the Hugging Face hub ({first_line(e)}); download the "
                f"checkpoint and set booster.llm to its folder"
            ) from None

    return fetch


def hub_source(repo: str) -> Source:
    fetch = _fetcher(repo)
    config = fetch("config.json")
    spec = hf_layer_spec(read_json_object(config), f"{repo}/config.json")

    def fetch_files_of(keys) -> Path:
        """Fetch the shard(s) holding ``keys(weight_map)`` (or the single file); -> the local folder."""
        index_file = fetch("model.safetensors.index.json", required=False)
        if index_file is not None:
            files = weight_map(read_json_object(index_file), f"{repo}/model.safetensors.index.json")
            for file in sorted({files[k] for k in keys(files)}):
                fetch(file)
        else:
            fetch("model.safetensors")
        return config.parent

    def read_layer(index: int, spec: LayerSpec, dtype: torch.dtype):
        folder = fetch_files_of(lambda files: layer_keys(files, index, repo))
        return read_hf_layer(folder, index, spec, dtype)

    def read_final_norm(dtype: torch.dtype):
        folder = fetch_files_of(lambda files: final_norm_keys(files, spec, repo).values())
        return read_hf_final_norm(folder, spec, dtype)

    return Source(repo, spec, read_layer, read_final_norm,
                  files=lambda i, norm: hf_files(config.parent, spec, i, norm))  # the cache's copy, once fetched
