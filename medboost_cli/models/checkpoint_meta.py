"""Reading one layer (and the final norm) from a Meta-format folder: params.json + consolidated.NN.pth, the
model-parallel parts concatenated (the LM family with a Meta format says along which dim; ``lm/llama_meta.py``).

Each file is memory-mapped and each tensor of the layer converted on its own, its pages then released
(``checkpoint_hf.converted``): peak memory stays near the layer's own bytes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from .checkpoint_hf import Source, convert, converted, final_norm_keys
from .lm import LayerSpec, lm_family, meta_format_family, meta_layer_spec
from .untrusted import first_line, load_state_dict, read_json_object


def is_meta_folder(source: str) -> bool:
    """Whether ``source`` is read as a Meta-format folder (params.json and no config.json)."""
    path = Path(source).expanduser()
    return path.is_dir() and not (path / "config.json").exists() and (path / "params.json").exists()


def meta_folder_source(path: Path) -> Source:
    spec = meta_layer_spec(read_json_object(path / "params.json"), str(path / "params.json"))
    return Source(str(path), spec, lambda i, spec, dt: read_meta_layer(path, i, spec, dt),
                  lambda dt: read_meta_final_norm(path, spec, dt), meta_format_family(str(path)).meta.rope_rows_,
                  files=lambda i, norm: [path / "params.json"] + ([] if i is None else _files(path)))


def _files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("consolidated.*.pth"))
    if not files:
        raise ModelFileError(f"{folder}: no consolidated.*.pth file")
    return files


def read_meta_layer(folder: Path, index: int, spec: LayerSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    prefix = f"layers.{index}."
    parts: dict[str, list[torch.Tensor]] = {}
    for file in _files(folder):
        full = load_state_dict(file)
        for key, tensor in full.items():
            if key.startswith(prefix):
                parts.setdefault(key[len(prefix):], []).append(converted(tensor, dtype))
        del full
    if not parts:
        raise ModelFileError(f"{folder}: no tensors of layer {index} (keys 'layers.{index}.*')")
    split_dims = lm_family(spec.arch).meta.split_dims
    state = {}
    for key, tensors in parts.items():
        dim = split_dims.get(key.rsplit(".", 1)[0])
        try:
            state[key] = torch.cat(tensors, dim=dim) if dim is not None and len(tensors) > 1 else tensors[0]
        except RuntimeError as e:
            raise ModelFileError(f"{folder}: the model-parallel parts of layers.{index}.{key} do not fit together "
                                 f"({first_line(e)}); the files come from different checkpoints") from None
    # Meta's q/k rows are in RoPE's per-head order; without RoPE they are used as they are (``llama_meta.py``).
    return convert(state, spec.arch, "meta")


def read_meta_final_norm(folder: Path, spec: LayerSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The final norm, which every model-parallel file holds whole: read from the first."""
    file = _files(folder)[0]
    full = load_state_dict(file)
    names = final_norm_keys(full, spec, str(file))
    found = {name: converted(full[key], dtype) for name, key in names.items()}
    del full
    return found
