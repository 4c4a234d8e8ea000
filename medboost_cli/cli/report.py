"""``medboost report`` (the paper's tables, our studies, statistics and figures) and ``report gradcam``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import DataDir, ResultsDir, app, log, results_dir_of, say

report_app = typer.Typer(help="Regenerate the paper's Tables 1-6, our control and layer studies, statistics and "
                              "figures from the results alone; `report gradcam RUN` draws Grad-CAM maps.")
app.add_typer(report_app, name="report")


ReportOut = typer.Option(None, "--out", help="output folder (default: beside the results folder: results -> "
                         "reports, NAME -> NAME-reports)")


@report_app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    markdown: bool = typer.Option(False, "--markdown", help="write report.md and print it (also what happens without "
                                  "any format option)"),
    latex: bool = typer.Option(False, "--latex", help="write tables/NAME.tex (one booktabs fragment per table, to "
                               "\\input) and report.tex, which inputs them all and compiles with pdflatex"),
    html: bool = typer.Option(False, "--html", help="write report.html (with Figure 1 and its caption)"),
    all_tables: bool = typer.Option(False, "--all", help="every table, also those without results (— cells), and "
                                    "the train command of every missing run; without it: only tables with data, "
                                    "and one `medboost ablate` line per table without"),
    out: Optional[Path] = ReportOut,
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds the fill-in commands ask for"),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="bootstrap replicates per interval"),
    margin: float = typer.Option(1.0, "--margin", help="the verdicts' equivalence margin in points (AUC percent): "
                                 "an interval within ±margin, with enough seeds, is \"no difference\""),
    results_dir: Optional[Path] = ResultsDir,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="MedMNIST folder the fill-in commands name "
                                            "(they read $MEDBOOST_DATA, else ~/.medmnist, without it)"),
) -> None:
    if ctx.invoked_subcommand:
        return
    from ..report import default_out_dir, make_report
    from ..results.folder_errors import folder_errors

    folder = results_dir_of(results_dir)
    out = out or default_out_dir(folder)
    given = [(option, str(ctx.params[name])) for option, name in (("--results-dir", "results_dir"),
                                                                    ("--data-dir", "data_dir"))
             if _on_command_line(ctx, name)]
    chosen = [f for f, on in (("markdown", markdown), ("latex", latex), ("html", html)) if on]
    formats = chosen or ["markdown"]
    printed = "markdown" in formats and (markdown or not chosen)  # the printed Markdown holds the verdict lines
    with folder_errors(out):  # a full or read-only report folder: one results error, the old report kept whole
        written = make_report(folder, out, formats, seeds=seeds, n_boot=n_boot, all_tables=all_tables,
                              command_options=tuple(p for pair in given for p in pair), margin=margin,
                              on_verdict=None if printed else log)
    if printed:  # no format given: Markdown, printed
        typer.echo(written["markdown"].read_text(), nl=False)  # as written, byte for byte: a pipe gets the file
    for fmt, path in written.items():
        log(f"{fmt}: {path}" + (f" (tables: {out / 'tables'})" if fmt == "latex" else ""))
    log(f"traces: {out / 'cells.csv'}, {out / 'pairs.csv'}, {out / 'verdict.csv'}")


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter came from the command line (not its default or its environment variable)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@report_app.command("gradcam")
def gradcam(
    run: str = typer.Argument(..., help="a 2D run id (baseline or booster); its paired run must exist too"),
    images: int = typer.Option(4, "--images", min=1, help="how many test images"),
    out: Optional[Path] = ReportOut,
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
) -> None:
    """Grad-CAM maps of a baseline run and its booster run, side by side (the paper's Figure 3)."""
    from ..gradcam import gradcam_figure
    from ..report import default_out_dir
    from ..results.folder_errors import folder_errors

    folder = results_dir_of(results_dir)
    out = out or default_out_dir(folder)
    with folder_errors(out):
        paths = gradcam_figure(run, folder, data_dir, images, out)
    for path in paths:
        say(str(path))
