"""What a study table's cells are, said in its caption from what the table holds: our numbers (test %, mean ± sample
sd over seeds, or one run's where every cell has one seed, each run's epoch selected on validation), parameter
counts, and the paper's values, in brackets in every cell or only where the paper gives one, or not at all. A study's
``caption`` names what the table compares; this sentence, added to it, cannot say "[paper]" of a table without paper
values or claim them for every cell."""

from __future__ import annotations

from .gather import Value
from .tables import Table, _Params

SEEDS_SHOWN = " (their number in parentheses; n=1: a single run)"  # as Markdown and HTML cells show them
OURS = f"Our numbers: test %, mean ± sd over seeds{SEEDS_SHOWN}, each run's epoch selected on validation"
ONE_SHOWN = " (n=1)"
ONE_RUN = f"Our numbers: test % of one run each{ONE_SHOWN}, its epoch selected on validation"  # one seed: no spread
PARAMS = "Params: millions of parameters"
PAPER_IN_BRACKETS = "the paper's value in brackets"
PAPER_IN_COLUMN = "the paper's value in the column beside ours"  # LaTeX's layout (latex.py)


def cells_caption(table: Table) -> str:
    """The sentence that says what ``table``'s cells are; empty for a table without cells of ours."""
    values = [c for row in table.rows for c in row if isinstance(c, Value)]
    if not values:
        return ""
    ours = [v for v in values if not isinstance(v, _Params)]
    one_run = {v.n for v in ours if v.mean is not None} == {1}
    parts = [ONE_RUN if one_run else OURS] if ours else []
    parts += [PARAMS] if any(isinstance(v, _Params) for v in values) else []
    with_paper = sum(v.paper is not None for v in values)
    if with_paper:
        parts.append(PAPER_IN_BRACKETS + ("" if with_paper == len(values) else " where the paper gives one"))
    return "; ".join(parts) + "."


def with_cells_caption(table: Table) -> Table:
    """``table`` with ``cells_caption`` after its title where it holds numbers of our runs (a table without any is a
    line with the command that fills it, or with ``--all`` a table of "—")."""
    sentence = cells_caption(table) if table.has_data else ""
    if sentence:
        table.title = f"{table.title}. {sentence}"
    return table


def latex_caption(title: str) -> str:
    """A title as the LaTeX layout reads: the paper's values stand in a column of their own there, and the number
    of seeds is said once for the table (latex.seeds_text), not in each cell."""
    return title.replace(PAPER_IN_BRACKETS, PAPER_IN_COLUMN).replace(SEEDS_SHOWN, "").replace(ONE_SHOWN, "")
