"""Table captions say what the cells are (report/captions.py): our numbers and how they were selected, and the
paper's values only where the table holds them, in every cell or in some."""

from __future__ import annotations

from pathlib import Path

import pytest

from medboost_cli.recipes import recipes_dir
from medboost_cli.recipe_yaml import load_yaml
from medboost_cli.report import make_report
from medboost_cli.report.captions import ONE_RUN, OURS, PAPER_IN_BRACKETS, PAPER_IN_COLUMN, SEEDS_SHOWN, cells_caption
from medboost_cli.report.gather import Value
from medboost_cli.report.tables import Table, _Params

from .report_fixtures import fabricate

SOME = f"{PAPER_IN_BRACKETS} where the paper gives one"


def _table(*cells) -> Table:
    return Table("t", "T", ["a"] * len(cells), [list(cells)])


def test_the_sentence_follows_what_the_cells_hold():
    every = _table(Value(80.0, 1.0, 3, 81.0), Value(70.0, 1.0, 3, 72.0))
    assert cells_caption(every) == f"{OURS}; {PAPER_IN_BRACKETS}."
    assert cells_caption(_table(Value(80.0, 1.0, 3, 81.0), Value(70.0, 1.0, 3))) == f"{OURS}; {SOME}."
    assert cells_caption(_table(Value(80.0, 1.0, 3), Value(None, 0.0, 0))) == f"{OURS}."
    assert cells_caption(_table(Value(80.0, 0.0, 1), Value(None, 0.0, 0))) == f"{ONE_RUN}."  # no spread to state
    assert cells_caption(_table(Value(80.0, 0.0, 1), Value(70.0, 1.0, 2))) == f"{OURS}."
    assert "Params: millions" in cells_caption(_table(_Params(1.5, 0.0, 0, 2.0), Value(80.0, 1.0, 3)))
    assert cells_caption(_table("text only")) == ""


def _titles(markdown: str) -> dict[str, str]:
    return {line[3:].split(" (")[0]: line[3:] for line in markdown.splitlines() if line.startswith("## ")}


@pytest.mark.parametrize("study, table, paper", [
    ("residual", "Table 6: importance of the residual structure", PAPER_IN_BRACKETS + "."),  # every cell
    ("pneumollm-tokens", "PneumoLLM Fig. 6b: number of diagnosis tokens m", SOME + "."),  # m = 4 only
    ("control", "Control: Pretrained versus random layer of the same shape", None),  # the paper has no control
])
def test_each_study_table_says_what_its_cells_are(tmp_path, study, table, paper):
    fabricate(tmp_path / "results", study, seeds=2)
    written = make_report(tmp_path / "results", tmp_path / "out", ["markdown", "latex"], n_boot=100)
    title = _titles(written["markdown"].read_text())[table]
    assert OURS in title
    if paper:
        assert title.endswith(paper)
    else:
        assert "paper" not in title.split(OURS)[1] and "[" not in title
    tex = next(line for line in written["latex"].read_text().splitlines()
               if line.startswith(rf"\textbf{{{table}"))  # the table's title in report.tex
    assert "epoch selected on validation" in tex and SEEDS_SHOWN not in tex  # LaTeX cells show no (n)
    assert (PAPER_IN_COLUMN in tex) == bool(paper) and PAPER_IN_BRACKETS not in tex


def test_no_study_caption_speaks_for_the_cells():
    """What the cells are is the report's to say from the cells: a study's caption names what the table compares."""
    for path in sorted((Path(recipes_dir()) / "studies").glob("*.yaml")):
        for spec in load_yaml(path.read_text()).get("tables", []):
            assert "[paper]" not in spec["caption"] and "test %" not in spec["caption"], (path.name, spec["caption"])
