"""The one place where an operating-system error on a results folder (or a report folder) becomes a
``ResultsError`` (exit 5): a full disk, a read-only file system, a permission denied, a path through a file, a
name too long. ``folder_errors(root)`` wraps a command's reads and writes of ``root``; the writes themselves go
through ``fileio``, which leaves nothing half-written behind."""

from __future__ import annotations

import errno
import functools
import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ResultsError

WHAT_TO_DO = {
    errno.ENOSPC: "the disk is full: free space there or point --results-dir at a folder with room",
    errno.EDQUOT: "the disk quota is used up: free space there or point --results-dir at a folder with room",
    errno.EROFS: "the file system is read-only: point --results-dir at a writable folder",
    errno.EACCES: "permission denied: make the folder writable or point --results-dir at another one",
    errno.EPERM: "operation not permitted: make the folder writable or point --results-dir at another one",
    errno.ENOTDIR: "a part of that path is a file, not a folder: point --results-dir at a folder",
    errno.EISDIR: "a folder stands where a file belongs: move it away",
    errno.ENAMETOOLONG: "the name is longer than the file system allows: use a shorter --results-dir",
    errno.EIO: "the disk reported an input/output error: check the device",
}
# Errors that a path outside the results folder cannot cause: they are the folder's wherever they come from.
FOLDER_WIDE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
MAX_PATH_SHOWN = 160


def shown_path(path: object) -> str:
    """A path as an error line shows it: whole up to ``MAX_PATH_SHOWN`` characters, else its two ends."""
    text = str(path)
    return text if len(text) <= MAX_PATH_SHOWN else f"{text[:60]}...{text[-60:]} ({len(text)} characters)"


def _inside(filename: object, root: Path) -> bool:
    try:
        path = Path(str(filename)).absolute()
        return path == root or root in path.parents
    except (OSError, ValueError):
        return False


def as_results_error(e: OSError, root: Path) -> ResultsError | None:
    """``e`` as a ``ResultsError`` naming the file and what to do, or None when it is not a results-folder error."""
    root = Path(root).absolute()
    if e.errno not in WHAT_TO_DO:
        return None
    filename = e.filename
    if filename is None and e.errno not in FOLDER_WIDE:
        return None
    if filename is not None and not _inside(filename, root) and e.errno not in FOLDER_WIDE:
        return None
    where = shown_path(filename if filename is not None else root)
    return ResultsError(f"{where}: cannot write or read the results there ({WHAT_TO_DO[e.errno]})")


@contextmanager
def folder_errors(root: Path) -> Iterator[None]:
    """Turn the OS errors on ``root`` raised inside the block into ``ResultsError`` (others pass unchanged)."""
    try:
        yield
    except OSError as e:
        error = as_results_error(e, Path(root))
        if error is None:
            raise
        raise error from e


def in_folder(argument: str) -> Callable[[Callable], Callable]:
    """Decorate a function whose parameter named ``argument`` is a results folder: the OS errors of a call on that
    folder become ``ResultsError``."""
    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            root = signature.bind_partial(*args, **kwargs).arguments.get(argument)
            if root is None:
                return fn(*args, **kwargs)
            with folder_errors(Path(root)):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
