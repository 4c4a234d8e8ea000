"""The report in LaTeX: one booktabs fragment per table (``tables/NAME.tex``, a bare ``tabular`` to ``\\input``
into a paper's own ``table`` environment) and ``report.tex``, a small document that inputs them all and compiles
with a stock pdflatex (article, geometry, booktabs, graphicx).

Numbers sit in right-aligned ``r`` columns (siunitx is not part of texlive-latex-recommended); the best mean of each
group of compared cells is bold; the paper's values get a column of their own beside ours, never brackets in a
cell. A cell shows mean ± std over seeds, or the single value for one seed; the caption says how many seeds.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..fileio import write_text
from .captions import latex_caption
from .gather import Value
from .render import CELLS_LATEX, EMPTY, FIGURE_CAPTION, NO_PAIRS, SKIPPED, VERDICT, Meta, empty_lines, introduction
from .tables import Table, _Params, best_values

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "✗": "w/o", "✓": "w/", "−": "$-$", "Δ": r"$\Delta$",
                  "≠": r"$\neq$", "→": r"$\to$"}
FRAGMENTS = "tables"  # the fragments' folder, beside report.tex


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and the report's symbols spelled in LaTeX; `code` spans lose
    their backticks."""
    text = re.sub(r"`([^`]*)`", r"\1", text)
    return _escape(text, hyphens=False)


def _escape(text: str, hyphens: bool) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    if hyphens:  # "--preset" stays two hyphens, not an en dash (before "—" becomes the "---" ligature)
        text = text.replace("--", "-{}-")
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text.encode("ascii", "replace").decode()


def latex_text(text: str) -> str:
    """Prose, titles and cells for the document: `code` spans in typewriter, command-line options with both of
    their hyphens."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(rf"\texttt{{{_escape(part, True)}}}" if i % 2 else _escape(part, True)
                   for i, part in enumerate(parts))


def _number(value: Value, bold: bool) -> str:
    if value.mean is None:
        return "---"
    if isinstance(value, _Params):
        text = f"{value.mean:.1f}"
    else:
        text = f"{value.mean:.2f}" if value.n <= 1 else f"{value.mean:.2f} $\\pm$ {value.std:.2f}"
    text = rf"\textbf{{{text}}}" if bold else text
    # where the cell's protocol differs from the paper's: the aspects' letters as a superscript
    return text + (rf"$^{{\mathrm{{{value.marks}}}}}$" if value.marks else "")


def _paper(value) -> str:
    if not isinstance(value, Value) or value.paper is None:
        return "---"
    return f"{value.paper:.1f}" if isinstance(value, _Params) else f"{value.paper:.2f}"


def _columns(t: Table) -> list[tuple[int, bool, bool]]:
    """(header index, numeric, has a paper column) per column of the table."""
    out = []
    for j in range(len(t.header)):
        cells = [r[j] for r in t.rows if j < len(r)]
        numeric = any(isinstance(c, Value) for c in cells)
        out.append((j, numeric, any(isinstance(c, Value) and c.paper is not None for c in cells)))
    return out


def fragment(t: Table) -> str:
    """One table as a booktabs ``tabular``, to ``\\input`` (its caption is in the comment above it)."""
    columns, best = _columns(t), best_values(t)
    spec = "".join(("r" if numeric else "l") + ("r" if paper else "") for _, numeric, paper in columns)
    header = []
    for j, _, paper in columns:
        header.append(latex_text(re.sub(r"\s*\[paper\]", "", t.header[j])))
        header += ["paper"] if paper else []
    lines = [f"% {latex_caption(t.title)}", f"% {seeds_text(t)}", "% needs \\usepackage{booktabs}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for row in t.rows:
        cells = []
        for j, _, paper in columns:
            c = row[j]
            cells.append(_number(c, id(c) in best) if isinstance(c, Value) else latex_text(str(c)))
            cells += [_paper(c)] if paper else []
        lines.append(" & ".join(cells) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def seeds_text(t: Table) -> str:
    """What a cell's number is, from the seeds behind the table's numbers."""
    ns = sorted({c.n for r in t.rows for c in r if isinstance(c, Value) and c.mean is not None and c.n})
    if not ns:
        return "no runs yet"
    if ns == [1]:
        return "one seed per cell: each number is a single run's (no spread)"
    span = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}--{ns[-1]}"
    return f"mean $\\pm$ std over {span} seeds" + (" (a single number: one seed)" if ns[0] == 1 else "")


def write_fragments(tables: list[Table], out_dir: Path) -> list[Path]:
    """``tables/NAME.tex`` for every table; returns their paths."""
    folder = Path(out_dir) / FRAGMENTS
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tables:
        path = folder / f"{t.name or t.key}.tex"
        write_text(path, fragment(t))
        paths.append(path)
    return paths


PREAMBLE = [r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm,landscape]{geometry}",
            r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\newsavebox{\fitbox}",
            r"% a fragment wider than the line is scaled down to it; the others keep their size",
            r"\newcommand{\fittable}[1]{\sbox{\fitbox}{\input{#1}}\ifdim\wd\fitbox>\linewidth"
            r"\resizebox{\linewidth}{!}{\usebox{\fitbox}}\else\usebox{\fitbox}\fi}"]


def render_latex(tables: list[Table], sentences: list[str], meta: Meta) -> str:
    """``report.tex``: the introduction, the summary, one ``table`` per fragment, the figure."""
    out = PREAMBLE + [r"\begin{document}", r"\section*{medboost report}", latex_text(introduction(meta, CELLS_LATEX)),
                      r"\subsection*{Summary}", r"\begin{itemize}"]
    out += [r"\item " + latex_text(s) for s in sentences] or [r"\item " + NO_PAIRS]
    out.append(r"\end{itemize}")
    if meta.verdicts:
        out += [r"\subsection*{" + VERDICT + "}", latex_text(meta.verdict_rules), r"\begin{itemize}"]
        out += [r"\item " + latex_text(v) for v in meta.verdicts] + [r"\end{itemize}"]
    for t in tables:
        seeds = f"; {seeds_text(t)}" if any(isinstance(c, Value) for r in t.rows for c in r) else ""
        # the title as a bold line, not \caption, whose own "Table N" would clash with the paper's numbers
        title = latex_text(latex_caption(t.title))
        out += [r"\begin{table}[htbp]\centering\small", r"\textbf{" + title + "}" + seeds + r"\par",
                r"\smallskip", rf"\fittable{{{FRAGMENTS}/{t.name or t.key}}}"]
        out += [r"\par\footnotesize " + latex_text(n) for n in t.notes]
        out += [r"\end{table}"]
    if meta.empty:
        out += [r"\subsection*{" + EMPTY + "}", r"\begin{itemize}"]
        out += [r"\item " + latex_text(line) for line in empty_lines(meta)] + [r"\end{itemize}"]
    if meta.skipped:
        out += [r"\subsection*{" + SKIPPED + "}", r"\begin{itemize}"]
        out += [r"\item " + latex_text(m) for m in meta.skipped] + [r"\end{itemize}"]
    for f in meta.figures:
        if f.endswith(".pdf"):
            out += [r"\begin{figure}[htbp]\centering", r"\includegraphics[width=0.9\linewidth]{" + Path(f).name + "}",
                    r"\caption{" + latex_text(FIGURE_CAPTION.split(": ", 1)[1]) + "}", r"\end{figure}"]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"
