"""MkDocs hook: measured figures rendered from ``benchmarks/records.yaml``.

A page line ``<!-- records: TABLE -->`` becomes that table's records (date, machine, allocator, command, what was
measured, figure), followed by its dated history when some records are marked ``history: true``. The machines
the records name are listed by ``<!-- records: machines -->``. An unknown table, a record without one of the
fields, or a record naming an unknown machine stops the build, so no figure appears without its provenance.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml

RECORDS = Path(__file__).resolve().parents[2] / "benchmarks" / "records.yaml"
MARKER = re.compile(r"<!-- records: ([a-z0-9-]+) -->")
FIELDS = ("table", "date", "machine", "command", "what", "figure")


def load(path: Path = RECORDS) -> dict:
    """The records file, checked: every record has its fields and names a known table and machine."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for i, record in enumerate(data["records"]):
        missing = [f for f in FIELDS if not record.get(f)]
        if missing:
            raise ValueError(f"{path}: record {i + 1} lacks {', '.join(missing)}")
        if record["table"] not in data["tables"]:
            raise ValueError(f"{path}: record {i + 1} names table {record['table']!r}, not one of {list(data['tables'])}")
        if record["machine"] not in data["machines"]:
            raise ValueError(f"{path}: record {i + 1} names machine {record['machine']!r}, "
                             f"not one of {list(data['machines'])}")
    return data


def _cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def _code_cell(value) -> str:
    """Inline code inside a table cell: HTML, because a Markdown code span would show the escaped ``|``."""
    return f"<code>{html.escape(' '.join(str(value).split())).replace('|', '&#124;')}</code>"


def _rows(records: list[dict]) -> list[str]:
    lines = ["| date | machine | allocator | command | what | figure |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['date']} | {r['machine']} | {r.get('allocator', '')} | {_code_cell(r['command'])} "
                     f"| {_cell(r['what'])} | {_cell(r['figure'])} |")
    return lines


def render(table: str, data: dict) -> str:
    """One table's records as Markdown, current first, then its history."""
    if table == "machines":
        lines = ["| machine | what it is |", "|---|---|"]
        return "\n".join(lines + [f"| {key} | {_cell(text)} |" for key, text in data["machines"].items()])
    if table not in data["tables"]:
        raise ValueError(f"{RECORDS}: no table {table!r}; the tables are {', '.join(data['tables'])}")
    mine = [r for r in data["records"] if r["table"] == table]
    current = [r for r in mine if not r.get("history")]
    history = sorted((r for r in mine if r.get("history")), key=lambda r: str(r["date"]))
    lines = [f"*{data['tables'][table]}*", "", *_rows(current)]
    if history:
        lines += ["", "History (figures that later measurements replaced):", "", *_rows(history)]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- records:" not in markdown:
        return markdown
    data = load()
    return MARKER.sub(lambda m: render(m.group(1), data), markdown)
