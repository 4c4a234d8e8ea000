"""Arrays read out of an npz file (MedMNIST's, a cohort file), and .npy files (lung masks), with each .npy header
checked BEFORE its array is allocated: numpy allocates what the header says (a 100-byte header may claim a (1e9,
28, 28) array, 784 GB) and only then finds the data missing. A header must describe no more bytes than its member
or file holds, and no more than this machine's available memory."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import psutil

from .errors import DataError, short

# How much of the available memory one array may take: the run needs room for the rest of the file and the model.
MEMORY_SHARE = 0.8


def _header(f) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open .npy stream, left just after its header. ValueError: not an .npy array."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype


def header_of(npz: np.lib.npyio.NpzFile, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes after the header) that member ``key`` declares, read from its header only; the data is
    not touched. ValueError where the member is no .npy array."""
    name = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
    info = npz.zip.getinfo(name)
    with npz.zip.open(info) as f:
        shape, dtype = _header(f)
        return shape, dtype, info.file_size - f.tell()


def check_claim(shape: tuple[int, ...], dtype: np.dtype, held: int, what: str) -> None:
    """DataError naming ``what`` (a file, or a file and its member) where an array of ``shape`` and ``dtype`` asks
    for more bytes than the ``held`` ones after its header, or than this machine has."""
    if dtype.hasobject:  # allow_pickle=False refuses these anyway; nothing to size
        return
    needs = math.prod(shape) * dtype.itemsize
    if needs > held:
        raise DataError(f"{what} claims shape {short(shape)} of {dtype} ({needs:,} bytes) but holds {held:,} bytes; "
                        f"the file is corrupt or was not written by numpy: make it again")
    available = psutil.virtual_memory().available
    if needs > MEMORY_SHARE * available:
        raise DataError(f"{what} of shape {short(shape)} needs {needs / 2**30:.1f} GiB, more than this machine's "
                        f"{available / 2**30:.1f} GiB of available memory allows; use a smaller file or a machine "
                        f"with more memory")


def check_header(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> None:
    """DataError naming ``path`` and ``key`` where the member's header asks for more than it holds or than this
    machine has."""
    shape, dtype, held = header_of(npz, key)
    check_claim(shape, dtype, held, f"{path}: array {key}")


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a .npy file, after the check ``check_claim`` makes (DataError naming ``path``); nothing
    is allocated. ValueError where the file is no .npy array, OSError where it cannot be read."""
    with open(path, "rb") as f:
        shape, dtype = _header(f)
        held = os.fstat(f.fileno()).st_size - f.tell()
    check_claim(shape, dtype, held, str(path))
    return shape, dtype


def read_arrays(npz: np.lib.npyio.NpzFile, keys: tuple[str, ...] | list[str], path: Path) -> dict[str, np.ndarray]:
    """``{key: array}`` for ``keys``, each header checked (``check_header``) before its array is read."""
    for key in keys:
        check_header(npz, key, path)
    return {key: npz[key] for key in keys}  # each checked: an .npy array no larger than its member


def read_npy(path: Path) -> np.ndarray:
    """A .npy file's array, its header checked first (``npy_header``); no pickled objects."""
    npy_header(path)
    return np.load(path, allow_pickle=False)
