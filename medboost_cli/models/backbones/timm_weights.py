"""Pretrained weights for the timm-built backbone families: a local file, the hub cache, or the hub."""

from __future__ import annotations

import pickle
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
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"backbone.weights: file not found: {path}; point it at a local weights file")
        if path.suffix == ".safetensors":  # its header checked before timm reads it (untrusted.py says how)
            safetensors_header(path)
        elif not _torch_file(path):
            raise ModelFileError(f"backbone.weights: {path} is neither a safetensors file (by its name) nor a torch "
                                 f"file (a zip archive or a pickle); download the weights again")
        return path
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


def _torch_file(path: Path) -> bool:
    """Whether ``path`` starts as torch.save writes: a zip archive, or (the legacy format) a pickle."""
    with open(path, "rb") as f:
        start = f.read(4)
    return start == b"PK\x03\x04" or start[:1] == b"\x80"


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
