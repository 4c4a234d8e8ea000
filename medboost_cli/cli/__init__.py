"""The ``medboost`` command: parses arguments and calls library functions, nothing more.

- ``app.py``: the typer app, its global options (``--version``, ``--allocator``) and what the commands share;
- one module per command group: ``train.py`` (download, train, evaluate), ``ablate.py``, ``runs.py``,
  ``report.py`` (report, report gradcam), ``prepare.py``, ``bench.py``; importing them registers their commands,
  in the order ``medboost --help`` lists them;
- ``choices.py``: --backbone and --booster's choices, from the registries;
- ``entry.py``: ``main``, the console script: the allocator restart, then the app.
"""

from __future__ import annotations

from . import train, ablate, runs, report, prepare, bench  # noqa: F401  (registers the commands, in this order)
from .app import app
from .choices import registry_choices
from .entry import allocator_choice, main

__all__ = ["app", "main", "registry_choices", "allocator_choice"]
