"""SHA-256 of large files that stay the same from run to run (LM checkpoints, for the run manifest), computed once
per version of a file: a cache keyed by the file's resolved path, size and modification time (nanoseconds), held
in memory and on disk, so that the runs of a study, each in a process of its own, hash a checkpoint once between
them. A file changed in place has another size or time and is hashed again.

The cache is ``$MEDBOOST_HASH_CACHE`` where set, else ``$XDG_CACHE_HOME/medboost/sha256`` (``~/.cache`` without
it): one small JSON file per entry, written atomically, so that processes hashing at once never corrupt it. An
entry that cannot be read or does not match its key is ignored and written again; a cache folder that cannot be
written costs a hash per process, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .fileio import write_text

CACHE_ENV = "MEDBOOST_HASH_CACHE"
CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_memory: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """Where hashes are kept between processes."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medboost" / "sha256"


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path`` (hex), from the cache where it holds this version of the file; OSError where the
    file cannot be read."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key in _memory:
        return _memory[key]
    entry = cache_dir() / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()}.json"
    digest = _cached(entry, key)
    if digest is None:
        digest = hash_file(resolved)
        try:
            write_text(entry, json.dumps({"path": key[0], "size": key[1], "mtime_ns": key[2], "sha256": digest}))
        except OSError:  # a read-only or full cache folder: the hash is still right
            pass
    _memory[key] = digest
    return digest


def _cached(entry: Path, key: tuple[str, int, int]) -> str | None:
    """The hash an entry holds for ``key``; None where there is none, or it is damaged or for another file."""
    try:
        held = json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(held, dict) or (held.get("path"), held.get("size"), held.get("mtime_ns")) != key:
        return None
    digest = held.get("sha256")
    return digest if isinstance(digest, str) and _SHA256.fullmatch(digest) else None


def hash_file(path: Path) -> str:
    """The SHA-256 of ``path``, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
