"""Model files as untrusted input: the checks of an LM folder's files (and of a torch checkpoint), and the typed
fields the LM families' config schemas are built from.

A checkpoint folder comes from anywhere (a hub mirror, a colleague, a half-finished download), so each file is read
with limits and checked before anything is allocated, indexed or built from it:

* JSON files (config.json, params.json, the shard index) are size-capped, must be JSON objects, and their fields
  are typed and range-checked (pydantic): positive sizes, heads dividing the width, finite positive epsilons
  (config.json: ``HFConfig`` here, or an LM family's subclass of it in ``models/lm/``; params.json:
  ``lm/llama_meta.py``);
* a safetensors header's length is checked against a cap and the file's size BEFORE it is read (a length field of
  2^40 would otherwise ask for a terabyte), and every tensor entry must have a known dtype, a shape of
  non-negative ints and byte offsets inside the data section that match shape x dtype size, so no tensor can be
  allocated larger than the file that holds it;
* torch files are read with ``weights_only=True`` (no code runs) and must hold a dict.

Every failure is a ``ModelFileError`` naming the file (and the tensor or key) and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ModelFileError, short, short_text  # short: the one bounded repr of error messages

MAX_JSON_BYTES = 64 * 2**20  # a 405B model's config and shard index are well under 1 MB
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own cap on a header (MAX_HEADER_SIZE)
MAX_LAYER_PARAMS = 2**34  # 17G; the largest LLaMA layer (3.1 405B) has 3.2G
_FIX = "re-download or re-export the checkpoint"

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def explain(error: ValidationError, where: str) -> str:
    """The first pydantic error as one line: which key, the value found, what was expected."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "missing":
        return f"{where}: lacks '{key}'; {_FIX}"
    found, why = short(first.get("input")), short_text(first["msg"])
    return f"{where}: bad {repr(key) if key else 'entry'}: {found} ({why}); {_FIX}"


# ------------------------------------------------------------------------------------------------------ JSON


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object (config.json, params.json, an index), read with a size cap."""
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise ModelFileError(f"{path}: {size} bytes, over the {MAX_JSON_BYTES} bytes a model's JSON file may "
                                 f"have; {_FIX}")
        value = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ModelFileError(f"{path}: cannot be read as JSON ({first_line(e)}); {_FIX}") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: holds a JSON {_json_type(value)}, not an object; {_FIX}")
    return value


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


Size = Annotated[int, Field(strict=True, gt=0, le=2**20)]  # widths; strict: 64.0, "64" and true are refused
Count = Annotated[int, Field(strict=True, gt=0, le=2**14)]  # heads, layers
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]  # epsilons, std, rope theta


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # configs carry many keys a single layer does not use


class HFConfig(Lenient):
    """The keys of a transformers config.json that shape one layer. An LM family whose config has keys of its own
    checks them with a subclass (``LMFamily.hf_config``)."""

    model_type: Annotated[str, Field(strict=True)]
    hidden_size: Size
    intermediate_size: Size
    num_attention_heads: Count
    num_hidden_layers: Count
    num_key_value_heads: Count | None = None
    head_dim: Size | None = None
    hidden_act: Annotated[str, Field(strict=True)] = "silu"
    rms_norm_eps: Positive = 1e-6
    layer_norm_eps: Positive = 1e-12
    initializer_range: Positive = 0.02
    attention_bias: Annotated[bool, Field(strict=True)] | None = None
    rope_theta: Positive | None = None  # not applied (F_L is position-free), but a damaged value is still refused


HF_HEAD_NAMES = ("hidden_size", "num_attention_heads", "num_key_value_heads")


def validated(schema: type[BaseModel], value: dict, where: str):
    """``value`` checked by the pydantic ``schema``; the first problem is one ModelFileError line."""
    try:
        return schema.model_validate(value)
    except ValidationError as e:
        raise ModelFileError(explain(e, where)) from None


def check_heads(hidden: int, heads: int, kv_heads: int, where: str, names: tuple[str, str, str]) -> None:
    """Heads split the width evenly (also where head_dim is given: every LLaMA-family model's do, e.g. Mistral-NeMo's
    5120 = 32 x 160 with head_dim 128), and query heads share key/value heads evenly."""
    if hidden % heads:
        raise ModelFileError(f"{where}: {names[1]}={heads} does not divide {names[0]}={hidden}; {_FIX}")
    if heads % kv_heads:
        raise ModelFileError(f"{where}: {names[2]}={kv_heads} does not divide {names[1]}={heads}; {_FIX}")


def check_layer_size(n_params: int, where: str) -> None:
    """A config describing a layer too large to be real is refused before anything is allocated for it."""
    if n_params > MAX_LAYER_PARAMS:
        raise ModelFileError(f"{where}: describes a layer of {n_params:,} parameters, over the "
                             f"{MAX_LAYER_PARAMS:,} medboost accepts (the largest LLaMA layer has 3.2G); {_FIX}")


def check_layer_memory(n_params: int, bytes_per_param: int, where: str) -> None:
    """A layer that fits MAX_LAYER_PARAMS but not this machine's available memory is refused before it is built
    (a config.json of hidden size 32768 describes a 16G-parameter layer: 64 GiB in fp32)."""
    import psutil

    needs, available = n_params * bytes_per_param, psutil.virtual_memory().available
    if needs > 0.8 * available:
        raise ModelFileError(f"{where}: one layer of {n_params:,} parameters needs {needs / 2**30:.1f} GiB, more than "
                             f"the {available / 2**30:.1f} GiB of memory available here; use a smaller LM, "
                             f"booster.dtype=bf16, or a machine with more memory")


def weight_map(index: dict, where: str) -> dict[str, str]:
    """The ``weight_map`` of a shard index (tensor key -> shard file), each file a plain name in the index's folder
    (a name like ../x would read outside the checkpoint)."""
    found = index.get("weight_map")
    if not isinstance(found, dict):
        raise ModelFileError(f"{where}: 'weight_map' is {short(found)}, not a mapping of tensor names to files; "
                             f"{_FIX}")
    for key, file in found.items():
        if not isinstance(file, str) or Path(file).name != file or file in (".", "..") \
                or not file.endswith((".safetensors", ".bin")):
            raise ModelFileError(f"{where}: tensor {key} maps to {short(file)}, not a .safetensors or .bin file "
                                 f"name in the same folder; {_FIX}")
    return found


# ----------------------------------------------------------------------------------------------- safetensors


class _TensorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Annotated[str, Field(strict=True)]
    shape: list[Annotated[int, Field(strict=True, ge=0)]] = Field(max_length=16)
    data_offsets: tuple[Annotated[int, Field(strict=True, ge=0)], Annotated[int, Field(strict=True, ge=0)]]


def safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """(tensor name -> {dtype, shape, data_offsets}, offset of the data section), every entry checked: after this,
    each tensor's bytes lie inside the file and equal its shape times its dtype's size."""
    unreadable = f"{path}: not a readable safetensors file"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise ModelFileError(f"{unreadable} ({size} bytes, not even the 8-byte header length); it is corrupt "
                                     f"or truncated: {_FIX}")
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(MAX_HEADER_BYTES, size - 8):  # checked before reading: the field may say 2^40
                raise ModelFileError(f"{unreadable} (its header length field says {length} bytes; the file has "
                                     f"{size - 8} after it and a header may have {MAX_HEADER_BYTES}); it is corrupt "
                                     f"or truncated: {_FIX}")
            header = json.loads(f.read(length))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ModelFileError(f"{unreadable} ({first_line(e)}); it is corrupt or truncated: {_FIX}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is a JSON {_json_type(header)}, not an object; {_FIX}")
    if not isinstance(header.pop("__metadata__", {}), dict):
        raise ModelFileError(f"{path}: the safetensors '__metadata__' is not an object; {_FIX}")
    data_bytes = size - 8 - length
    for key, entry in header.items():
        _check_tensor_entry(path, key, entry, data_bytes)
    return header, 8 + length


def _check_tensor_entry(path: Path, key: str, entry: Any, data_bytes: int) -> None:
    where = f"{path}: tensor {key}"
    try:
        e = _TensorEntry.model_validate(entry)
    except ValidationError as err:
        raise ModelFileError(explain(err, where)) from None
    dtype = SAFETENSORS_DTYPES.get(e.dtype)
    if dtype is None:
        raise ModelFileError(f"{where}: dtype {short(e.dtype)} is not one of {', '.join(SAFETENSORS_DTYPES)}; {_FIX}")
    begin, end = e.data_offsets
    if begin > end:
        raise ModelFileError(f"{where}: data_offsets [{begin}, {end}] run backwards; {_FIX}")
    if end > data_bytes:
        raise ModelFileError(f"{where} is cut short (its data_offsets end at {end}, past the {data_bytes} bytes of the "
                             f"data section); the file is corrupt or truncated: {_FIX}")
    nbytes = math.prod(e.shape) * dtype.itemsize  # bounded: compared with end - begin, itself within the file
    if nbytes != end - begin:
        raise ModelFileError(f"{where}: shape {short(e.shape)} of {e.dtype} needs {nbytes} bytes but its "
                             f"data_offsets span {end - begin}; {_FIX}")


# ----------------------------------------------------------------------------------------------------- torch


def load_torch_dict(path: Path, fix: str = _FIX, mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True`` (unpickling runs no code), of a file that must hold a dict."""
    try:
        found = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as e:  # zip, pickle, mmap and allocation errors alike: the file is damaged or foreign
        raise ModelFileError(f"{path}: cannot be loaded ({first_line(e)}); {fix}") from None
    if not isinstance(found, dict):
        raise ModelFileError(f"{path}: holds a {type(found).__name__}, not a dict; {fix}")
    return found


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict file (pytorch_model.bin, Meta's consolidated.NN.pth), memory-mapped: names -> tensors only."""
    state = load_torch_dict(path, mmap=True)
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelFileError(f"{path}: entry {short(key)} is a {type(value).__name__}, not a named tensor; "
                                 f"this is not a state dict: {_FIX}")
    return state


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (a library's may run to many), for a one-line error."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
