"""Results: the results folder's layout, the row's columns and their reading and writing.

A results folder (``--results-dir``, else ``$MEDBOOST_RESULTS``, else ``./results``) holds::

    runs/RUN_ID.parquet            one row per run (``COLUMNS``), replaced atomically as the run progresses
    checkpoints/RUN_ID/last.pt     the last finished epoch's training state (deleted once the run completes)
    checkpoints/RUN_ID/best.pt     the weights of the best validation epoch
    checkpoints/RUN_ID/*.pending.* a forced retraining's row and best weights until it completes (``attempts``)
    bench/BENCH_ID.parquet         one row per ``medboost bench`` case
    locks/RUN_ID.lock              held while a process trains the run (medboost_cli.locks)
    logs/RUN_ID.log                a run's log lines and errors when a launcher ran it (medboost_cli.launchers)

Run ids are made in medboost_cli.run_ids. One file per run makes concurrent writers safe: a row is written when
the run starts (status ``running``) and replaced when it ends (``completed``, ``failed`` or ``interrupted``); a
completed row stays until a forced retraining has completed (medboost_cli.attempts). Every write is atomic
(medboost_cli.fileio); ``folder_errors`` turns the operating system's errors on the folder (a full disk, a
read-only folder) into ``ResultsError``.
Per-sample test scores and labels are kept in the row, so statistics need nothing else. Rows carry
``schema_version``; rows of older schemas are read with what they lack filled in (medboost_cli.compat).

The modules, in layers (each imports only those listed before it):

* ``layout``: ``ResultsDir``, where each file of a folder lives;
* ``rows``: ``COLUMNS``, ``new_row`` (with the columns that follow from others) and ``write_row``;
* ``provenance``: the package versions and the git commit a row records;
* ``checks``: what a run file must be to count (``read_run`` reads one file with them);
* ``bulk``: many run files as one table, checked in bulk (``read_runs_table``);
* ``reading``: ``load_results`` (a folder as a DataFrame), ``read_row`` and ``find_run`` (one run).

A file that fails its checks is skipped with one ``results warning:`` line by commands over many runs (``runs``,
``report``, ``ablate``), so that they go on and never count it, and is an error (exit 5) for commands about one
run (``evaluate``, ``report gradcam``, and ``train``, which never replaces a row it cannot read).
"""

from ..compat import ADDED_AFTER_V1, ADDED_AFTER_V2, ADDED_IN_V2, SCHEMA_VERSION
from ..run_ids import cell_id, check_run_id, make_run_id
from .bulk import read_runs_table, warn_line
from .checks import RUN_STATUSES
from .layout import ResultsDir
from .provenance import git_commit, package_versions, run_manifest
from .reading import find_run, load_results, read_row
from .rows import COLUMNS, derived_columns, new_row, write_bench_row, write_row

__all__ = [
    "ADDED_AFTER_V1", "ADDED_AFTER_V2", "ADDED_IN_V2", "COLUMNS", "RUN_STATUSES", "SCHEMA_VERSION", "ResultsDir",
    "cell_id", "check_run_id", "derived_columns", "find_run", "git_commit", "load_results", "make_run_id",
    "new_row", "package_versions", "read_row", "read_runs_table", "run_manifest", "warn_line", "write_bench_row", "write_row",
]
