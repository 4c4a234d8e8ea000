"""Every file medboost writes goes through here, so that a crash, a kill -9 or a full disk leaves either the old
file or the new one, never half of one: the content goes to a temporary file beside its place (``.NAME.*.tmp``),
is flushed to disk, then renamed onto it. A write that fails removes its temporary file (and closes it, so that a
full disk gets its space back) and raises an ``OSError`` with its errno (``ENOSPC`` where a library reports a full
disk in words of its own); callers turn those into the project's errors (``results.folder_errors``).

Two kinds of file are written in place by design: a log (``append_log``, a line at a time) and a download's
``.part`` file (``open_partial``, which a later download continues); neither is a result.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

FULL_DISK_BYTES = 1 << 20  # a failed write into a folder with less room than this failed for want of space


def _write_atomically(path: Path, fill: Callable[[IO[bytes], str], None]) -> Path:
    """``fill(file, tmp)`` on a new temporary file in ``path``'s folder, then flush, fsync and rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:  # closed whatever happens, so a failed write holds no disk space
            try:
                fill(f, tmp)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                raise
            except Exception as e:  # a library's own words for a full disk (torch.save: "unexpected pos")
                if _no_room(path.parent):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
                raise
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _no_room(folder: Path) -> bool:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < FULL_DISK_BYTES


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` with the path of a temporary file in ``path``'s folder (for libraries that open the
    file themselves), then rename it onto ``path``."""
    return _write_atomically(path, lambda f, tmp: write(tmp))


def atomic_write_file(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` with a temporary file open for binary writing, then rename it onto ``path``."""
    return _write_atomically(path, lambda f, tmp: write(f))


def write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write_file(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def save_torch(path: Path, obj: Any) -> Path:
    """``torch.save(obj)`` into ``path``, atomically."""
    import torch

    return atomic_write_file(path, lambda f: torch.save(obj, f))


def save_figure(fig: Any, path: Path, **options: Any) -> Path:
    """A matplotlib figure into ``path``, in the format its suffix names, atomically."""
    return atomic_write_file(path, lambda f: fig.savefig(f, format=Path(path).suffix.lstrip("."), **options))


def write_csv(frame: Any, path: Path, **options: Any) -> Path:
    """A pandas DataFrame as CSV into ``path``, atomically."""
    return write_text(path, frame.to_csv(**options))


def append_log(path: Path) -> IO[str]:
    """A log file opened for appending, line-buffered (a log is written as it goes, not replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", buffering=1, encoding="utf-8")


def open_partial(path: Path, resume: bool) -> IO[bytes]:
    """A download's ``.part`` file, continued (``resume``) or started over; renamed into place once whole."""
    return open(path, "ab" if resume else "wb")
