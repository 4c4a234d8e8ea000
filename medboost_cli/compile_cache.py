"""Where torch.compile keeps what it compiled (``train.compile``): inductor's on-disk caches, the FX-graph cache and
the AOT-autograd cache (both on by default in torch), hold compiled graphs across processes. A study trains the
same shapes many times, so with the cache on a filesystem every run sees, only its first run compiles cold.

The folder is ``$MEDBOOST_COMPILE_CACHE`` where set (a cluster's shared filesystem, say), else
``$TORCHINDUCTOR_CACHE_DIR``, else torch's default (``/tmp/torchinductor_USER``, one per machine). medboost sets
``TORCHINDUCTOR_CACHE_DIR`` from its own variable, so the processes a run starts (DDP, a study's pool) inherit it."""

from __future__ import annotations

import os

import torch
import torch.nn as nn

CACHE_ENV = "MEDBOOST_COMPILE_CACHE"
INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"


def use_cache_dir() -> str | None:
    """Point inductor's caches at ``$MEDBOOST_COMPILE_CACHE`` when it is set; the folder in use (None: torch's
    default, chosen by torch when it first compiles)."""
    folder = os.environ.get(CACHE_ENV)
    if folder:
        os.environ[INDUCTOR_ENV] = os.path.abspath(os.path.expanduser(folder))
    return os.environ.get(INDUCTOR_ENV)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` with inductor's caches where ``use_cache_dir`` says; it shares its parameters."""
    use_cache_dir()
    return torch.compile(model)
