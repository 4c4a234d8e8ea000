"""The report's formats (markdown and HTML here, LaTeX in .latex), written from the same tables and introduction.

Text uses `backticks` for code; each format turns them into its own markup (HTML: <code>, LaTeX drops them).
By default only the tables with data are shown; each table without any gets one line with the command that fills
it (``Meta.empty``); ``--all`` shows every table and the train command of every missing run (``Meta.missing``).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from .tables import Table, best_values

NO_PAIRS = "No booster-vs-baseline pair has results yet."
SKIPPED = "Files not counted"
EMPTY = "Tables without results"
VERDICT = "Verdict per task"
FIGURE_CAPTION = ("Figure 1: test AUC per dataset without and with R-LLM. Ours: mean over seeds with its 95% "
                  "confidence interval (n=1: the single run, no interval); the paper's values (hollow markers) come "
                  "from its own configuration and protocol (selected on the test split).")


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
    empty: list[tuple[str, str]] = field(default_factory=list)  # (title, fill command) of each table not shown
    verdicts: list[str] = field(default_factory=list)  # one line per task and comparison (medboost_cli.verdict)
    verdict_rules: str = ""  # how the verdicts are decided


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


CELLS_MD = ("cells are test mean ± std over seeds (n), in percent (one seed: the run's value and n=1), with the "
            "paper's value in brackets")
CELLS_LATEX = ("cells are test mean ± std over seeds in percent (each table says how many), with the paper's value "
               "in the column beside ours")


def introduction(meta: Meta, cells: str = CELLS_MD) -> str:
    """The report's opening paragraph; ``cells`` says how the format shows a cell (LaTeX: CELLS_LATEX)."""
    return (f"{meta.n_runs} completed runs from `{meta.results}`, {meta.date}. Protocol: epoch selected on "
            f"{selection_text(meta.selection)}, test scored once; {cells}. Every number traces to its runs in "
            "`cells.csv` and `pairs.csv`."
            + (f" {len(meta.skipped)} file(s) under runs/ are not sound result rows and are not counted (see "
               f"\"{SKIPPED}\")." if meta.skipped else ""))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def empty_lines(meta: Meta) -> list[str]:
    """One line per table without results: its title and the command that fills it."""
    return [f"{title}: fill with: `{command}`" for title, command in meta.empty]


def render_markdown(tables: list[Table], sentences: list[str], meta: Meta) -> str:
    out = ["# medboost report", "", introduction(meta), "", "## Summary", ""]
    out += [f"- {s}" for s in sentences] or [f"- {NO_PAIRS}"]
    if meta.verdicts:
        out += ["", f"## {VERDICT}", "", _md_escape(meta.verdict_rules), ""]
        out += [f"- {_md_escape(v)}" for v in meta.verdicts]
    for t in tables:
        out += ["", f"## {t.title}", "", "| " + " | ".join(map(_md_escape, t.header)) + " |",
                "|" + "|".join("---" for _ in t.header) + "|"]
        out += ["| " + " | ".join(_md_escape(str(c)) for c in r) + " |" for r in t.rows]
        out += [""] + [f"{n}  " for n in t.notes] if t.notes else []
    if meta.empty:
        out += ["", f"## {EMPTY}", "", "Not shown (`medboost report --all` shows them):", ""]
        out += [f"- {_md_escape(line)}" for line in empty_lines(meta)]
    if meta.missing:
        out += ["", "## Missing runs", "", "Commands that would fill every empty cell above:", "", "```bash"]
        out += meta.missing + ["```"]
    if meta.skipped:
        out += ["", f"## {SKIPPED}", ""] + [f"- {_md_escape(m)}" for m in meta.skipped]
    if meta.figures:
        out += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in meta.figures if f.endswith(".png")]
    return "\n".join(out) + "\n"


def _html_text(text: str) -> str:
    """Escaped text with each `code` span as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


HTML_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em} table{border-collapse:collapse;margin:1em 0}"
              "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} td:first-child,th:first-child{text-align:left}"
              "th{background:#f3f3f3} .note{font-size:90%;color:#444} code{background:#f3f3f3;padding:0 3px}"
              ".wide{overflow-x:auto} figure{margin:1em 0} figcaption{font-size:90%;color:#444;max-width:60em}")


def _html_table(t: Table) -> list[str]:
    best = best_values(t)
    out = [f"<h2>{_html_text(t.title)}</h2><div class='wide'><table><tr>"
           + "".join(f"<th>{_html_text(h)}</th>" for h in t.header) + "</tr>"]
    for r in t.rows:
        cells = [f"<strong>{html.escape(str(c))}</strong>" if id(c) in best else html.escape(str(c)) for c in r]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return out + ["</table></div>"] + [f"<p class='note'>{_html_text(n)}</p>" for n in t.notes]


def render_html(tables: list[Table], sentences: list[str], meta: Meta) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>medboost report</title>",
           f"<style>{HTML_STYLE}</style></head><body>", "<h1>medboost report</h1>",
           f"<p>{_html_text(introduction(meta))}</p>", "<h2>Summary</h2><ul>"]
    out += [f"<li>{_html_text(s)}</li>" for s in sentences] or [f"<li>{NO_PAIRS}</li>"]
    out.append("</ul>")
    if meta.verdicts:
        out += [f"<h2>{VERDICT}</h2><p class='note'>{_html_text(meta.verdict_rules)}</p><ul>"]
        out += [f"<li>{_html_text(v)}</li>" for v in meta.verdicts] + ["</ul>"]
    for t in tables:
        out += _html_table(t)
    if meta.empty:
        out += [f"<h2>{EMPTY}</h2><p>Not shown (<code>medboost report --all</code> shows them):</p><ul>"]
        out += [f"<li>{_html_text(line)}</li>" for line in empty_lines(meta)] + ["</ul>"]
    if meta.missing:
        out += ["<h2>Missing runs</h2><details><summary>commands</summary><pre>",
                html.escape("\n".join(meta.missing)), "</pre></details>"]
    if meta.skipped:
        out += [f"<h2>{SKIPPED}</h2><ul>"] + [f"<li>{_html_text(m)}</li>" for m in meta.skipped] + ["</ul>"]
    figures = [f for f in meta.figures if f.endswith(".png")]
    out += ["<h2>Figures</h2>"] if figures else []
    out += [f"<figure><img src='{html.escape(Path(f).name)}' alt='{html.escape(Path(f).stem)}' style='max-width:100%'>"
            f"<figcaption>{_html_text(FIGURE_CAPTION)}</figcaption></figure>" for f in figures]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
