"""How an image smaller than the backbone's input is brought to it (``data.resize``), as a registry of
``ResizeMode`` entries, one module each:

- ``upsample`` (``upsample.py``, the default): interpolated to the input, the paper's and MedMNIST v2's way;
- ``pad`` (``pad.py``): centred with zeros around, MedMNIST+'s way.

The recipe schema takes its choices from ``RESIZES``; ``BatchTransform`` (transforms.py) calls the entry. Adding a
mode is one module with a ``ResizeMode`` subclass and one entry in ``RESIZES`` below."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import ResizeMode
from .pad import PAD
from .upsample import UPSAMPLE

__all__ = ["DEFAULT_RESIZE", "RESIZES", "ResizeMode", "resize_mode"]

RESIZES: dict[str, ResizeMode] = {mode.name: mode for mode in (UPSAMPLE, PAD)}
DEFAULT_RESIZE = UPSAMPLE.name  # what a recipe without data.resize does; the run-id hash leaves it out


def resize_mode(name: Any) -> ResizeMode:
    """The registered mode ``name``, or one ConfigError line listing them."""
    if not isinstance(name, str) or name not in RESIZES:
        raise ConfigError(f"data.resize={name!r} is not a resize mode; choose one of {', '.join(RESIZES)}")
    return RESIZES[name]
