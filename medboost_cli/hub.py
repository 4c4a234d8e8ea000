"""Hugging Face hub access that fails in seconds, with a clear message, when the hub cannot be reached."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelFileError


def cached_file(repo: str, filename: str) -> Path | None:
    """The file from the local hub cache, if it is there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def ensure_reachable(what: str, fix: str, timeout: float = 3.0) -> None:
    """Raise at once when the hub's host does not answer, instead of after a minute of retries."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelFileError(f"cannot fetch {what}: HF_HUB_OFFLINE is set; {fix}")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        raise ModelFileError(f"cannot reach {host} to fetch {what} ({e.strerror or e}); {fix}") from None
