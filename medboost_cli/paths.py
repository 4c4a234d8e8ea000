"""Paths the user names, checked before any file is touched: names within the file system's limits (a longer one
makes every call on it fail with ENAMETOOLONG), and paths from a file confined to the folder they are relative to
(a labels.csv row of ``/etc/x`` or ``../x`` must not read a file outside that folder)."""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Annotated

from pydantic import AfterValidator

from .errors import ConfigError, DataError, short

# Linux's (and macOS's) limits: NAME_MAX bytes for one name in a path, PATH_MAX for a whole path.
NAME_MAX = 255
PATH_MAX = 4096


def name_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a file name here (a name or the whole path over the limits), or None."""
    text = os.fsencode(os.fspath(path))
    if len(text) >= PATH_MAX:
        return f"is {len(text)} bytes long, over the {PATH_MAX - 1} a path may have"
    longest = max(text.split(b"/"), key=len, default=b"")
    if len(longest) > NAME_MAX:
        return f"has a name of {len(longest)} bytes ({short(os.fsdecode(longest))}), over the {NAME_MAX} a file " \
               f"or folder name may have"
    return None


def _valid_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(f"this path {problem}")
    return value


# A recipe key that names a file or folder (backbone.weights, booster.llm): a name the file system can hold.
PathName = Annotated[str, AfterValidator(_valid_name)]


def check_name(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; a ConfigError naming ``what`` (an option or key) where the file system cannot hold it."""
    problem = name_problem(path)
    if problem:
        raise ConfigError(f"{what} {short(os.fspath(path))} {problem}; choose a shorter path")
    return Path(path)


def confined(folder: Path, relative: str, where: str) -> Path:
    """``folder / relative`` for a path read from a file, which must stay inside ``folder``: no absolute path, no
    ``..``, no drive. DataError naming ``where`` (the file and line) otherwise."""
    parts = PurePath(relative).parts
    if PurePath(relative).is_absolute() or PurePath(relative).drive or ".." in parts:
        raise DataError(f"{where}: path {short(relative)} leaves the folder {folder}; paths are relative to it, "
                        f"without '..' or a leading '/'")
    problem = name_problem(relative)
    if problem:
        raise DataError(f"{where}: path {short(relative)} {problem}")
    return folder / relative
