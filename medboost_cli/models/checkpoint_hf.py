"""Reading one layer (and the final norm) from a Hugging Face checkpoint folder: config.json plus
model.safetensors[.index.json] or pytorch_model.bin[.index.json], only the requested tensors read.

Memory-lean reads: peak memory while loading stays near the layer's own bytes. safetensors: the header (8-byte
length + JSON, the format's whole specification) gives each tensor's byte range, read with readinto() into the
tensor's own buffer, so no file page is mapped into the process (a mapped, touched page counts as resident memory
until unmapped: with safe_open the peak was 2.0x the layer). torch files: torch.load(mmap=True) maps the file, and
each source tensor's pages are released (madvise MADV_DONTNEED; clean private pages) once it is converted.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from ..errors import ModelFileError
from .lm import LayerSpec, hf_layer_spec, lm_family
from .llm import IGNORED_SUFFIXES, rename_key
from .untrusted import SAFETENSORS_DTYPES, load_state_dict, read_json_object, safetensors_header, weight_map


class Source(NamedTuple):
    """A checkpoint resolved: its shape, and how to read one layer's tensors and the final norm's."""

    description: str  # the folder or hub id read
    spec: LayerSpec
    read_layer: Callable[[int, LayerSpec, torch.dtype], dict[str, torch.Tensor]]  # -> state dict in our names
    read_final_norm: Callable[[torch.dtype], dict[str, torch.Tensor]]  # -> norm parameter name -> tensor
    rope_rows_: Callable[[nn.Module, LayerSpec], None] | None = None  # reorders q/k rows for RoPE (Meta files)
    # -> the files read for layer i (None: the shape alone) with or without the final norm (the run manifest's)
    files: Callable[[int | None, bool], list[Path]] | None = None


def hf_folder_source(path: Path) -> Source:
    spec = hf_layer_spec(read_json_object(path / "config.json"), str(path / "config.json"))
    return Source(str(path), spec, lambda i, spec, dt: read_hf_layer(path, i, spec, dt),
                  lambda dt: read_hf_final_norm(path, spec, dt), files=lambda i, norm: hf_files(path, spec, i, norm))


INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def hf_files(folder: Path, spec: LayerSpec, index: int | None, final_norm: bool) -> list[Path]:
    """The files of a Hugging Face folder that reading layer ``index`` (and the final norm) reads: config.json, the
    index file and the shards holding those tensors, or the single weights file; config.json alone for ``index``
    None (the shape without weights). As ``hf_key_files`` chooses them, without reading any tensor."""
    files = [folder / "config.json"]
    if index is None:
        return files
    for name in INDEX_NAMES:
        if (folder / name).exists():
            key_files = weight_map(read_json_object(folder / name), str(folder / name))
            keys = list(layer_keys(key_files, index, str(folder)))
            keys += list(final_norm_keys(key_files, spec, str(folder)).values()) if final_norm else []
            return files + [folder / name] + [folder / f for f in sorted({key_files[k] for k in keys})]
    single = "model.safetensors" if (folder / "model.safetensors").exists() else "pytorch_model.bin"
    return files + [folder / single]


_LAYER_KEY = re.compile(r"^(?P<prefix>(?:[A-Za-z_]+\.)*?(?:layers|layer))\.(?P<index>\d+)\.(?P<rest>.+)$")
_PREFERRED_PREFIXES = ("model.layers", "layers", "encoder.layer", "bert.encoder.layer", "model.encoder.layer")


def layer_keys(keys: Iterable[str], index: int, where: str) -> dict[str, str]:
    """checkpoint key -> key inside the layer, for the keys of layer ``index`` under the model's main stack."""
    by_prefix: dict[str, dict[str, str]] = {}
    for key in keys:
        m = _LAYER_KEY.match(key)
        if m and int(m["index"]) == index:
            by_prefix.setdefault(m["prefix"], {})[key] = m["rest"]
    for prefix in _PREFERRED_PREFIXES:
        if prefix in by_prefix:
            return by_prefix[prefix]
    if len(by_prefix) == 1:
        return next(iter(by_prefix.values()))
    raise ModelFileError(f"{where}: no tensors of layer {index} found (looked for {', '.join(_PREFERRED_PREFIXES)})")


def convert(state: dict[str, torch.Tensor], arch: str, scheme: str) -> dict[str, torch.Tensor]:
    """A layer's tensors under the block's parameter names (unused rotary buffers dropped)."""
    return {rename_key(k, arch, scheme): v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}


def read_hf_layer(folder: Path, index: int, spec: LayerSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    key_files = hf_key_files(folder)
    wanted = layer_keys(key_files, index, str(folder))
    state = {wanted[key]: tensor for key, tensor in _read_keys(folder, key_files, list(wanted), dtype).items()}
    return convert(state, spec.arch, "hf")


def final_norm_keys(keys, spec: LayerSpec, where: str) -> dict[str, str]:
    """The final norm's parameter name -> its checkpoint key, each the first of the family's candidates found."""
    found = {}
    for name, candidates in lm_family(spec.arch).final_norm_keys.items():
        key = next((k for k in candidates if k in keys), None)
        if key is None:
            raise ModelFileError(f"{where}: no final norm {name} (looked for {', '.join(candidates)}); use "
                                 f"booster.lm_norm=unit or none")
        found[name] = key
    return found


def read_hf_final_norm(folder: Path, spec: LayerSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's final norm tensors, read alone like the layer's."""
    key_files = hf_key_files(folder)
    names = final_norm_keys(key_files, spec, str(folder))
    tensors = _read_keys(folder, key_files, list(names.values()), dtype)
    return {name: tensors[key] for name, key in names.items()}


def _read_keys(folder: Path, key_files: dict[str, str], keys: list[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``keys`` read file by file, each file opened once (safetensors: only those tensors' bytes)."""
    out: dict[str, torch.Tensor] = {}
    for file in sorted({key_files[k] for k in keys}):
        in_file = [k for k in keys if key_files[k] == file]
        if file.endswith(".safetensors"):
            out.update(read_safetensors(folder / file, in_file, dtype))
        else:
            full = load_state_dict(folder / file)
            for key in in_file:
                out[key] = converted(tensor_in(full, key, folder / file), dtype)
            del full
    return out


def tensor_in(state: dict, key: str, path: Path):
    if key not in state:
        raise ModelFileError(f"{path}: has no tensor {key}, which the index file says it holds; the checkpoint is "
                             f"incomplete or mixed up: re-download it")
    return state[key]


def hf_key_files(folder: Path) -> dict[str, str]:
    """Every tensor key -> the file holding it, from the index file or the single file's header."""
    for index_name in INDEX_NAMES:
        if (folder / index_name).exists():
            return weight_map(read_json_object(folder / index_name), str(folder / index_name))
    if (folder / "model.safetensors").exists():
        header, _ = safetensors_header(folder / "model.safetensors")
        return {k: "model.safetensors" for k in header}
    if (folder / "pytorch_model.bin").exists():
        return {k: "pytorch_model.bin" for k in load_state_dict(folder / "pytorch_model.bin")}
    raise ModelFileError(f"{folder}: no model.safetensors, pytorch_model.bin or index file")


def read_safetensors(path: Path, keys: list[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Read ``keys`` from a safetensors file, one tensor at a time, converted to ``dtype``. The header is checked
    whole first (``untrusted.safetensors_header``): no tensor is allocated larger than its bytes in the file."""
    header, base = safetensors_header(path)
    out = {}
    with open(path, "rb") as f:
        for key in keys:
            info = tensor_in(header, key, path)
            start, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=SAFETENSORS_DTYPES[info["dtype"]])
            buffer = memoryview(tensor.view(-1).view(torch.uint8).numpy()) if tensor.numel() else memoryview(b"")
            f.seek(base + start)
            if end - start != len(buffer) or f.readinto(buffer) != len(buffer):
                raise ModelFileError(f"{path}: tensor {key} is cut short or mis-sized; the file is corrupt or truncated")
            out[key] = tensor.to(dtype)
    return out


_MADV_DONTNEED = 4


def converted(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of an mmapped tensor in ``dtype``; the source's pages are then handed back to the OS."""
    out = tensor.to(dtype, copy=True)
    if sys.platform.startswith("linux") and tensor.numel():
        page = os.sysconf("SC_PAGE_SIZE")
        start = tensor.data_ptr() // page * page
        end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
        ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
    return out
