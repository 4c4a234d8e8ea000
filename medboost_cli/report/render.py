"""The report's three formats (markdown, LaTeX, HTML), written from the same tables and the same introduction.

Text uses `backticks` for code; each format turns them into its own markup (LaTeX drops them).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from .tables import Table

NO_PAIRS = "No booster-vs-baseline pair has results yet."
SKIPPED = "Files not counted"
FIGURE_CAPTION = "Figure 1: test AUC per dataset without and with R-LLM (ours: mean ± std; paper: markers)."


@dataclass
class Meta:
    """What the introduction and the closing sections say besides the tables."""

    n_runs: int
    results: str
    date: str
    selection: dict[str | None, int]  # train.select_metric -> number of runs (None: not recorded)
    missing: list[str] = field(default_factory=list)  # commands that would fill the empty cells
    figures: list[str] = field(default_factory=list)  # paths of the figure files
    skipped: list[str] = field(default_factory=list)  # files under runs/ left out, each with why (results.load_results)


def _metric_name(metric: str | None) -> str:
    return {"auc": "AUC", "acc": "ACC", None: "an unrecorded metric"}.get(metric, metric)


def selection_text(selection: dict[str | None, int]) -> str:
    """How the runs chose their epoch, from their recorded train.select_metric (each metric, if several)."""
    recorded = {m: n for m, n in selection.items() if m is not None}
    if not recorded:
        return "the validation split (each run's train.select_metric)"
    if len(selection) == 1:
        return f"validation {_metric_name(next(iter(recorded)))}"
    return "validation " + " or ".join(f"{_metric_name(m)} ({n} run{'s' if n != 1 else ''})"
                                       for m, n in selection.items())


def introduction(meta: Meta) -> str:
    return (f"{meta.n_runs} completed runs from `{meta.results}`, {meta.date}. Protocol: epoch selected on "
            f"{selection_text(meta.selection)}, test scored once; cells are test mean ± std over seeds (n), in "
            "percent, with the paper's value in brackets. Every number traces to its runs in `cells.csv` and "
            "`pairs.csv`." + (f" {len(meta.skipped)} file(s) under runs/ are not sound result rows and are not "
                              f"counted (see \"{SKIPPED}\")." if meta.skipped else ""))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(tables: list[Table], sentences: list[str], meta: Meta) -> str:
    out = ["# medboost report", "", introduction(meta), "", "## Summary", ""]
    out += [f"- {s}" for s in sentences] or [f"- {NO_PAIRS}"]
    for t in tables:
        out += ["", f"## {t.title}", "", "| " + " | ".join(map(_md_escape, t.header)) + " |",
                "|" + "|".join("---" for _ in t.header) + "|"]
        out += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in t.rows]
        out += [""] + [f"{n}  " for n in t.notes] if t.notes else []
    if meta.missing:
        out += ["", "## Missing runs", "", "Commands that would fill every empty cell above:", "", "```bash"]
        out += meta.missing + ["```"]
    if meta.skipped:
        out += ["", f"## {SKIPPED}", ""] + [f"- {_md_escape(m)}" for m in meta.skipped]
    if meta.figures:
        out += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in meta.figures if f.endswith(".png")]
    return "\n".join(out) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "✗": "w/o", "✓": "w/", "−": "$-$", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text.encode("ascii", "replace").decode()


def render_latex(tables: list[Table], sentences: list[str], meta: Meta) -> str:
    out = [r"\documentclass[10pt]{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}",
           r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\begin{document}",
           r"\section*{medboost report}", latex_escape(introduction(meta)), r"\subsection*{Summary}",
           r"\begin{itemize}"]
    out += [r"\item " + latex_escape(s) for s in sentences] or [r"\item " + NO_PAIRS]
    out.append(r"\end{itemize}")
    for t in tables:
        out += [r"\begin{table}[h]\centering\small", r"\caption{" + latex_escape(t.title) + "}",
                r"\resizebox{\textwidth}{!}{%", r"\begin{tabular}{" + "l" * len(t.header) + "}", r"\toprule",
                " & ".join(latex_escape(h) for h in t.header) + r" \\", r"\midrule"]
        out += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in t.rows]
        out += [r"\bottomrule", r"\end{tabular}}"]
        out += [r"\par\footnotesize " + latex_escape(n) for n in t.notes]
        out += [r"\end{table}", r"\clearpage" if len(t.rows) > 14 else ""]
    if meta.skipped:
        out += [r"\subsection*{" + SKIPPED + "}", r"\begin{itemize}"]
        out += [r"\item " + latex_escape(m) for m in meta.skipped] + [r"\end{itemize}"]
    for f in meta.figures:
        if f.endswith(".pdf"):
            out += [r"\begin{figure}[h]\centering", r"\includegraphics[width=0.9\textwidth]{" + Path(f).name + "}",
                    r"\caption{" + latex_escape(FIGURE_CAPTION) + "}", r"\end{figure}"]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def _html_text(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


def render_html(tables: list[Table], sentences: list[str], meta: Meta) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>medboost report</title><style>",
           "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0}",
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} td:first-child{text-align:left}",
           ".note{font-size:90%;color:#444}</style></head><body>", "<h1>medboost report</h1>",
           f"<p>{_html_text(introduction(meta))}</p>", "<h2>Summary</h2><ul>"]
    out += [f"<li>{e(s)}</li>" for s in sentences] or [f"<li>{NO_PAIRS}</li>"]
    out.append("</ul>")
    for t in tables:
        out += [f"<h2>{e(t.title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in t.rows]
        out += ["</table>"] + [f"<p class='note'>{e(n)}</p>" for n in t.notes]
    if meta.missing:
        out += ["<h2>Missing runs</h2><details><summary>commands</summary><pre>",
                e("\n".join(meta.missing)), "</pre></details>"]
    if meta.skipped:
        out += [f"<h2>{SKIPPED}</h2><ul>"] + [f"<li>{e(m)}</li>" for m in meta.skipped] + ["</ul>"]
    out += [f"<img src='{e(Path(f).name)}' style='max-width:100%'>" for f in meta.figures if f.endswith(".png")]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
