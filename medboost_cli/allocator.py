"""The process's host-memory allocator: which one is in use, and starting medboost again on tcmalloc or jemalloc.

Why it matters on CPU: every training step's activations are freed at its end and made again by the next step.
glibc's malloc hands blocks over 32 MiB back to the operating system when they are freed, so each step faults in and
zeroes every page of its activations again: 2.4 million 4 KiB pages a step at the paper's 2D shape and batch 32,
about a tenth of the step's time (docs: performance). tcmalloc and jemalloc keep freed pages for the next
allocation of that size; glibc told to do the same (``MALLOC_MMAP_MAX_=0``) fragments its one heap instead.

An allocator is chosen when a process starts (``LD_PRELOAD``), so ``medboost --allocator NAME`` (or
``MEDBOOST_ALLOCATOR``) starts the same command again in the same process (``os.execve``: same PID, interpreter
command line and environment, plus the preload) before anything else runs; processes it starts (bench's workers, DataLoader workers,
``torchrun``'s ranks started by this command) inherit it. ``system``, the default, never preloads: a process that
restarts itself, and children and cluster jobs that inherit a preload, are the user's choice to make. ``auto``
takes tcmalloc where the system has it, else mimalloc, which medboost installs from PyPI on x86-64 Linux (the
``cmeel-mimalloc`` wheel), so that a plain ``pip install`` can run on a caching allocator without an apt step;
jemalloc is never ``auto``'s pick (slower than glibc in the CPU preset, below). Results do not depend on the allocator:
only where memory comes from changes, not a single value computed in it (tested).

Only on Linux (``LD_PRELOAD`` is glibc's dynamic loader's); elsewhere ``auto`` stays on the system's allocator.
"""

from __future__ import annotations

import ctypes.util
import os
from importlib import metadata
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from platform import libc_ver

from .errors import ConfigError

CHOICES = ("auto", "system", "tcmalloc", "mimalloc", "jemalloc")
AUTO_ORDER = ("tcmalloc", "mimalloc")  # what ``auto`` takes, the first one found
ENV = "MEDBOOST_ALLOCATOR"
TRIED = "MEDBOOST_ALLOCATOR_TRIED"  # set on the restart: a restart that did not load the library must not loop

# Library names as ctypes.util.find_library takes them (ldconfig's cache: /usr/lib/x86_64-linux-gnu and the like).
# tcmalloc_minimal is tcmalloc without the heap profiler (Debian/Ubuntu: libtcmalloc-minimal4; conda: gperftools).
LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "mimalloc": ("mimalloc",), "jemalloc": ("jemalloc",)}
# Allocators a Python distribution carries as a shared library: the distribution and the library's file name.
# cmeel wheels install their C/C++ libraries under site-packages/cmeel.prefix/lib.
BUNDLED = {"mimalloc": ("cmeel-mimalloc", "libmimalloc.so.3")}
INSTALL = {
    "tcmalloc": "apt install libtcmalloc-minimal4 (Debian/Ubuntu), dnf install gperftools-libs, or conda install -c "
                "conda-forge gperftools",
    "mimalloc": "pip install cmeel-mimalloc (x86-64 Linux; a dependency of medboost there)",
    "jemalloc": "apt install libjemalloc2 (Debian/Ubuntu), dnf install jemalloc, or conda install -c conda-forge "
                "jemalloc",
}
# Each library's settings for a training loop that frees and remakes the same large blocks every step:
# tcmalloc: no warning on stderr for each allocation over 1 GiB (batch-128 activations are many such);
# jemalloc: never hand freed pages back (its default gives them back after 10 s, mid-step at the paper's shape,
# which measured slower than glibc in the CPU preset: 920 against 738-783 ms).
# mimalloc: the same, for the same reason (its default purges freed pages after 10 ms).
SETTINGS = {
    "tcmalloc": {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)},
    "mimalloc": {"MIMALLOC_PURGE_DELAY": "-1"},
    "jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"},
}


def in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """The allocator this process runs on: ``tcmalloc`` or ``jemalloc`` when that library is mapped into it, else
    ``glibc`` on a glibc Linux, else ``system``."""
    try:
        text = maps.read_text()
    except OSError:
        return "system"
    for line in text.splitlines():
        name = line.rsplit("/", 1)[-1] if "/" in line else ""
        for allocator in LIBRARIES:
            if name.startswith(f"lib{allocator}"):
                return allocator
    return "glibc" if libc_ver()[0] == "glibc" else "system"


def find(allocator: str) -> str | None:
    """The library to preload for ``allocator`` as the dynamic loader names it (``libtcmalloc_minimal.so.4``), or
    None where it is not installed."""
    for name in LIBRARIES[allocator]:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return bundled(allocator)


def bundled(allocator: str) -> str | None:
    """The path of ``allocator``'s library where an installed Python distribution carries it (``BUNDLED``)."""
    if allocator not in BUNDLED:
        return None
    distribution, library = BUNDLED[allocator]
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == library:
            path = Path(file.locate())
            return str(path) if path.is_file() else None
    return None


def restart_environment(choice: str, environ: Mapping[str, str], current: str,
                        finder: Callable[[str], str | None] = find, platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to start this command again with so that it runs on ``choice``, or None to go on as it is.

    ``current`` is ``in_use()``. A library the user preloaded themselves (``LD_PRELOAD``) is kept under ``auto``
    and ``system``. Raises ``ConfigError`` for an unknown choice, a library that is not installed, a platform without
    ``LD_PRELOAD``, or a restart that came back without the library loaded."""
    if choice not in CHOICES:
        raise ConfigError(f"--allocator (or {ENV})='{choice}' is not an allocator; use one of {', '.join(CHOICES)}")
    if choice == "system" or current in LIBRARIES and choice in ("auto", current):
        return None
    wanted = next((a for a in AUTO_ORDER if finder(a)), AUTO_ORDER[0]) if choice == "auto" else choice
    if environ.get(TRIED) == wanted:  # this process is that restart, and the library did not load
        if choice == "auto":
            return None
        raise ConfigError(f"--allocator {choice}: started again with LD_PRELOAD={environ.get('LD_PRELOAD', '')} but "
                          f"{choice} is not in use (a setuid program, or a loader that ignores LD_PRELOAD); start "
                          f"medboost with that LD_PRELOAD yourself, or use --allocator system")
    if not platform.startswith("linux"):
        if choice == "auto":
            return None
        raise ConfigError(f"--allocator {choice} needs Linux (LD_PRELOAD); on {platform} use --allocator system")
    library = finder(wanted)
    if not library:
        if choice == "auto":
            return None
        raise ConfigError(f"--allocator {choice}: lib{LIBRARIES[choice][0]} is not installed; install it "
                          f"({INSTALL[choice]}), or use --allocator auto or system")
    # the user's other preloads stay; another allocator (inherited from a parent medboost) would compete with it
    kept = [p for p in environ.get("LD_PRELOAD", "").replace(":", " ").split()
            if not Path(p).name.startswith(tuple(f"lib{a}" for a in LIBRARIES))]
    return {**environ, **SETTINGS[wanted], "LD_PRELOAD": " ".join([library, *kept]), TRIED: wanted}


def started_as_medboost(orig_argv: list[str]) -> bool:
    """True when the interpreter was started to run medboost: the ``medboost`` console script or ``python -m
    medboost_cli``; not a program of the user's (or a test) that calls ``cli.main()``, which must go on as it is."""
    args = orig_argv[1:]
    return any(Path(a).name in ("medboost", "medboost.exe") for a in args[:1]) or any(
        a == "-m" and b == "medboost_cli" for a, b in zip(args, args[1:]))


def start_on(choice: str) -> None:
    """Start this command again on ``choice`` if it is not running on it yet (``os.execve``: does not return), else
    return. Only where the process was started as medboost (``started_as_medboost``), before it does anything
    else."""
    if not started_as_medboost(sys.orig_argv):
        return
    env = restart_environment(choice, os.environ, in_use())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv: the interpreter's own command line, so the console script, `python -m medboost_cli` and a
    # `python -c` that calls cli.main() all start again as they started
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
