"""MkDocs hook: the CLI reference page, rendered from the Typer app at build time.

A page holding the line ``<!-- cli-reference -->`` gets, in its place, every command of ``medboost`` (groups and
their subcommands included) with its help text, usage line and the options and arguments exactly as click's help
records give them: the same names, metavars, choices, defaults and ``[env var: ...]`` notes that ``--help`` shows.
The reference therefore cannot drift from the code; ``tests/test_docs.py`` checks that it covers every command.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

MARKER = "<!-- cli-reference -->"


def medboost_command():
    """The click command tree of ``medboost``, with the registries' ``--backbone``/``--booster`` choices that the
    console script offers for ``train`` and ``bench``."""
    import typer.main

    from medboost_cli import cli

    with_choices = getattr(cli, "_use_registry_choices", None)
    if with_choices is not None:
        with_choices(["train", "bench"])
    return typer.main.get_command(cli.app)


def _context(command, name: str, parent=None):
    return command.context_class(command, info_name=name, parent=parent)


def walk(command, name: str = "medboost", parent=None) -> Iterator[tuple[str, object, object]]:
    """(full command path, command, its context) for ``command`` and every command below it, in --help order."""
    ctx = _context(command, name, parent)
    yield ctx.command_path, command, ctx
    subcommands = getattr(command, "commands", {})
    for sub in command.list_commands(ctx) if subcommands else []:
        child = subcommands[sub]
        if not getattr(child, "hidden", False):
            yield from walk(child, sub, ctx)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code_cell(text: str) -> str:
    """Inline code inside a table cell: HTML, because a Markdown code span would show the escaped ``|``."""
    return f"<code>{html.escape(' '.join(text.split())).replace('|', '&#124;')}</code>"


def _usage(path: str, pieces: list[str]) -> str:
    """The usage line as ``--help`` prints it: an argument's ``{name}`` metavar in capitals."""
    return re.sub(r"\{([a-z_]+)\}", lambda m: m.group(1).upper(), " ".join([path, *pieces]))


def _section(path: str, command, ctx) -> list[str]:
    depth = min(path.count(" ") + 1, 4)
    lines = [f"{'#' * (depth + 1)} `{path}`", ""]
    help_text = (command.help or "").strip()
    if help_text:
        lines += [help_text.split("\b")[0].strip(), ""]
    usage = _usage(path, command.collect_usage_pieces(ctx))
    lines += ["```text", usage, "```", ""]
    records = [p.get_help_record(ctx) for p in command.get_params(ctx)]
    records = [r for r in records if r is not None]
    if records:
        lines += ["| option or argument | description |", "|---|---|"]
        lines += [f"| {_code_cell(opts)} | {_cell(text)} |" for opts, text in records]
        lines.append("")
    return lines


def render() -> str:
    """The reference as Markdown: one section per command."""
    lines: list[str] = []
    for path, command, ctx in walk(medboost_command()):
        lines += _section(path, command, ctx)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
