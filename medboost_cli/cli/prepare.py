"""``medboost prepare``: raw images into one file medboost trains on (``prepare dicom``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, err_console, say

prepare_app = typer.Typer(help="Convert raw images into one file medboost trains on (`prepare dicom`).",
                            no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


@prepare_app.command("dicom")
def prepare_dicom(
    folder: Path = typer.Argument(..., help="folder of DICOM files (any layout; labels.csv names them)"),
    labels: Path = typer.Option(..., "--labels", help="CSV with header file,patient_id,label (file relative to "
                                "FOLDER, label a class index)"),
    out: Path = typer.Option(..., "--out", help="cohort file to write (.npz)"),
    size: int = typer.Option(224, "--size", help="output images are SIZE x SIZE"),
    masks: Optional[Path] = typer.Option(None, "--masks", help="folder of lung masks (FILE.png or .npy, same "
                                         "relative paths): crop each image to its mask's bounding box"),
    margin: float = typer.Option(0.05, "--margin", help="widen the mask's box by this fraction of its height/width "
                                 "on each side (0 = the paper's rectangle)"),
    aspect: str = typer.Option("stretch", "--aspect", help="stretch (the paper) or pad (black borders, shapes kept)"),
) -> None:
    """Window (tags' default), invert MONOCHROME1, crop, resize and store DICOMs with labels and patient ids."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..dicom import prepare_dicom as prepare

    with Progress(TextColumn("[bold]prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("prepare", total=None)
        summary = prepare(folder, labels, out, size=size, masks=masks, margin=margin, aspect=aspect,
                          log=lambda line: bar.console.print(line, soft_wrap=True, highlight=False, markup=False),
                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    for line in summary.lines():
        say(line)
