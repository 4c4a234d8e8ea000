"""Pretrained weights for the timm-built backbone families: a local file, the hub cache, or the hub."""

from __future__ import annotations

import pickle
import stat
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import timm
from safetensors import SafetensorError

from ...errors import ConfigError, ModelFileError
from ...hub import cached_file, ensure_reachable
from ..untrusted import first_line, safetensors_header

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig


def pretrained_file(timm_name: str, cfg: BackboneConfig) -> Path:
    """The local weights file: backbone.weights, else the hub cache, else fetched from the hub."""
    if cfg.weights:
        return check_weights(cfg)
    hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if (cached := cached_file(hub_id, filename)) is not None:
            return cached
    ensure_reachable(
        f"pretrained weights for {timm_name} (hub id {hub_id})",
        f"download https://huggingface.co/{hub_id}/resolve/main/model.safetensors and set backbone.weights=PATH, "
        f"or train from scratch with backbone.pretrained=false",
    )
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(hub_id, "model.safetensors"))


def check_weights(cfg: BackboneConfig) -> Path | None:
    """``backbone.weights`` where the backbone loads it (``backbone.pretrained``), checked as the family's checks of
    the keys are, before any data is read or model built: a regular file (ConfigError otherwise) in a format timm
    loads (ModelFileError otherwise): safetensors by its name, with its header checked (untrusted.py), else a torch
    file, a zip archive holding a pickle or (the legacy format) a pickle. None where no file is named or loaded."""
    if not (cfg.pretrained and cfg.weights):
        return None
    path = Path(cfg.weights).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as e:  # FileNotFoundError, PermissionError on a folder above it, ...
        what = "file not found" if isinstance(e, FileNotFoundError) else f"cannot read it ({e.strerror or e})"
        raise ConfigError(f"backbone.weights: {what}: {path}; point it at a local weights file") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, a socket or a device)"
        raise ConfigError(f"backbone.weights: {path} is {kind}; point it at a weights file (.safetensors or .pth)")
    try:
        if path.suffix == ".safetensors":  # its header checked before timm reads it (untrusted.py says how)
            safetensors_header(path)
        elif not _torch_file(path):
            raise ModelFileError(f"backbone.weights: {path} is neither a safetensors file (by its name) nor a torch "
                                 f"file (a zip archive or a pickle); download the weights again")
    except OSError as e:
        raise ModelFileError(f"backbone.weights: {path}: cannot read it ({e.strerror or e})") from None
    return path


def _torch_file(path: Path) -> bool:
    """Whether ``path`` is what torch.save writes: a zip archive with a pickle (``data.pkl``) in it, or (the legacy
    format) a pickle of protocol 2 or later."""
    with open(path, "rb") as f:
        start = f.read(4)
    if start[:1] == b"\x80":
        return start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if start != b"PK\x03\x04":
        return False
    try:
        with zipfile.ZipFile(path) as archive:  # the central directory alone is read
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def create_timm_model(timm_name: str, cfg: BackboneConfig, **kwargs):
    """``timm.create_model`` with the pretrained weights of ``pretrained_file``; a model timm cannot build with
    these keys is one ConfigError line."""
    if cfg.pretrained:
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_file(timm_name, cfg))}
    try:
        return timm.create_model(timm_name, pretrained=cfg.pretrained, **kwargs)
    except (SafetensorError, pickle.UnpicklingError, EOFError) as e:  # a damaged weights file (a .pth, or a
        # .safetensors whose tensors' bytes the header check cannot see)
        file = kwargs.get("pretrained_cfg_overlay", {}).get("file")
        raise ModelFileError(f"backbone.weights: {file}: not a readable weights file ({first_line(e)}); download "
                             f"the weights again") from None
    except (RuntimeError, ValueError, OSError) as e:
        raise ConfigError(
            f"backbone {cfg.name}: cannot build {timm_name} with {kwargs} ({str(e).splitlines()[0]}); "
            f"check backbone.weights and the size keys"
        ) from None
