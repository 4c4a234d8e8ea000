"""`medboost report`: the paper's Tables 1-6 and our control and layer studies, regenerated from the results alone.

Every table comes from a study (recipes/studies/): its planned runs say which run ids fill which cell, so a
cell can only contain runs of exactly that configuration (the run id carries the configuration's hash), and
its ``tables:`` say what is shown, under which labels, beside which of the paper's numbers. A study is reported
once per configuration that has results (the paper's recipes, or ``--preset cpu``), and once per set of
overrides its runs share (``ablate STUDY --epochs 1`` or ``--set``: the overrides are named in the caption). Only
tables with data are shown; each table without any gets one line with the ``medboost ablate`` command that fills
it (``all_tables`` shows every table, with "—" cells, and the train command of every missing run). Completed runs
that fit no configuration get a table of their own, one row per configuration, labelled with the recipe keys that
set them apart from the nearest planned cell or task recipe.

Without ``--out`` the report goes beside the results folder (``default_out_dir``): ``results`` -> ``reports``.

Cells read "mean ± std (n)" over seeds ("mean (n=1)" for one seed), in percent, with the paper's value in
brackets (LaTeX: in a column of its own, one booktabs fragment per table under tables/, see .latex). Each booster-vs-baseline
pair gets a paired-bootstrap interval (medboost_cli.stats); † marks an interval that includes zero. Each task
and comparison of the booster arm gets a verdict line (medboost_cli.verdict: Holm across a study's tasks and
backbones). Every number can be traced to its runs through cells.csv, pairs.csv and verdict.csv, written beside
the report.

Beside our cells, the field's reference numbers (medboost_cli.anchors): each study configuration with results gets
an anchors table (MedMNIST v2's baselines and MedMNIST+'s best per size and scheme, each with its source and
protocol), and each cell beside a paper value marks where its protocol differs from the paper's (≠ and letters).

Modules: gather (cells, pairs and their statistics), tables (one renderer per table kind), anchor_table (the
anchors table), protocols (our cells' protocol and its marks), render (markdown, HTML), latex (fragments and the
document that inputs them), figures (Figure 1).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, ResultsError
from ..fileio import write_csv, write_text
from ..cohort import cv_groups
from ..results import warn_line
from ..verdict import VerdictSettings, report_verdicts, write_verdicts
from .anchor_table import anchor_tables
from .captions import with_cells_caption
from .figures import figure1
from .gather import gather, outside_cells, paired_stats, selection_metrics
from .latex import latex_escape, render_latex, write_fragments
from .render import Meta, render_html, render_markdown
from .panel_table import panel_tables
from .tables import build_tables, outside_summary, summary, table_cv, table_outside, table_pairs

__all__ = ["default_out_dir", "make_report", "latex_escape"]

RENDERERS = {"markdown": ("report.md", render_markdown), "latex": ("report.tex", render_latex),
             "html": ("report.html", render_html)}


def default_out_dir(results_dir: Path) -> Path:
    """The report's folder when no --out is given: beside the results folder and named after it, so that the
    reports of two results folders never overwrite each other: ``results`` -> ``reports``, ``results-cpu`` ->
    ``reports-cpu``, ``exp1`` -> ``exp1-reports``."""
    results_dir = Path(results_dir)
    if results_dir.name in ("", ".."):  # "." (whose name is "") and ".." say nothing: use the absolute path
        results_dir = results_dir.resolve()
    name = results_dir.name or "medboost"
    return results_dir.parent / (name.replace("results", "reports") if "results" in name else f"{name}-reports")


def make_report(results_dir: Path, out_dir: Path | None, formats: list[str], seeds: int = 3, n_boot: int = 2000,
                log=print, warn=warn_line, command_options: tuple[str, ...] = (), all_tables: bool = False,
                margin: float = 1.0, on_verdict=None) -> dict[str, Path]:
    """Write the requested formats (markdown, latex, html) plus cells.csv, pairs.csv and Figure 1 into out_dir
    (None: ``default_out_dir``). ``command_options`` (e.g. ``("--results-dir", "runs")``) end every command the
    report prints to fill its empty cells. ``all_tables``: every table, also those without data, and the train
    command of every missing run (else: only tables with data, and one fill-in line per table without).
    ``margin``: the verdicts' equivalence margin in points; ``on_verdict`` gets each verdict line (``verdicts``).

    A file under runs/ that is not a sound row is left out, named through ``warn`` (one line each) and listed in
    the report itself, so that the report is made and says what it does not count."""
    settings = VerdictSettings(margin=margin, n_boot=n_boot)
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise ConfigError(f"unknown report format '{unknown[0]}'; use markdown, latex or html")
    results_dir = Path(results_dir)
    out_dir = default_out_dir(results_dir) if out_dir is None else Path(out_dir)
    if not (results_dir / "runs").is_dir():
        raise ResultsError(f"{results_dir}: not a results folder (no runs/ inside); point --results-dir at the folder "
                            f"that `medboost train` or `ablate` wrote")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: is a file; give a folder for the report and its tables")
    skipped: list[str] = []

    def skip(message: str) -> None:
        skipped.append(message)
        warn(message)

    configs, df = gather(results_dir, seeds, tuple(command_options), warn=skip)
    seen: set = set()
    pairs = [p for c in configs if c.has_results for p in paired_stats(c, n_boot, seen)]
    outside = outside_cells(configs, df)
    studies = [with_cells_caption(t) for t in build_tables(configs)]  # each caption says what its cells are
    tables = studies + anchor_tables(configs) + ([table_pairs(pairs)] if pairs else [])
    tables += [table_outside(outside)] if outside else []
    cv = cv_groups(df.to_dict("records")) if not df.empty else []
    tables += ([table_cv(cv)] if cv else []) + panel_tables(configs)
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = verdict_lines(configs, pairs, settings, out_dir, on_verdict)
    done = set(df["run_id"]) if not df.empty else set()
    missing = [c.run_command(run) for c in configs for run in c.plan if run.run_id not in done] if all_tables else []
    shown = [t for t in tables if all_tables or t.has_data or t.fill is None]
    meta = Meta(n_runs=len(df), results=str(results_dir), selection=selection_metrics(df),
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                missing=list(dict.fromkeys(missing)), figures=figure1(configs, out_dir), skipped=skipped,
                empty=[(t.title, t.fill) for t in tables if not (all_tables or t.has_data or t.fill is None)],
                verdicts=verdicts, verdict_rules=settings.rules())
    write_traces(tables, out_dir)
    sentences = summary(pairs) + outside_summary(outside)
    written = {}
    for fmt in formats:
        name, render = RENDERERS[fmt]
        write_text(out_dir / name, render(shown, sentences, meta))
        written[fmt] = out_dir / name
    if "latex" in formats:
        write_fragments(shown, out_dir)
    return written


def verdict_lines(configs: list, pairs: list, settings: VerdictSettings, out_dir: Path, on_verdict=None) -> list[str]:
    """The verdict line of each task and comparison (medboost_cli.verdict), each given to ``on_verdict``, and
    verdict.csv with their numbers."""
    verdicts = report_verdicts(configs, pairs, settings)
    write_verdicts(verdicts, out_dir / "verdict.csv")
    lines = [v.line() for v in verdicts]
    for line in lines if on_verdict else ():
        on_verdict(line)
    return lines


TRACE_COLUMNS = ["table", "row", "column", "metric", "mean", "std", "n", "run_ids"]


def write_traces(tables: list, out_dir: Path) -> None:
    """cells.csv (every number of every table) and pairs.csv (every paired difference), each with its header
    even when it has no row."""
    for name, is_pairs in (("cells.csv", False), ("pairs.csv", True)):
        rows = [tr for t in tables for tr in t.traces if (t.key == "pairs") == is_pairs]
        write_csv(pd.DataFrame(rows, columns=TRACE_COLUMNS), out_dir / name, index=False)
