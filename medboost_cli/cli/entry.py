"""The console script's entry: the allocator restart first, then the typer app, every error as one line.

The host-memory allocator is chosen when a process starts (``allocator.py``), so ``main`` settles it before
anything else: it reads ``--allocator`` (or ``MEDBOOST_ALLOCATOR``) with the app's own parser and, for a command
that trains or measures, starts the process again on that allocator; only then does it read the registries (torch)
and run the app.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from ..allocator import start_on
from ..errors import EXIT_INTERNAL, ConfigError, MedboostError, explain
from . import choices
from .app import app, err_console

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer runs on click
    from click.exceptions import ClickException

ALLOCATOR_COMMANDS = {"train", "evaluate", "ablate", "bench"}


def allocator_choice(args: list[str]) -> str | None:
    """The allocator ``medboost ARGS`` runs on, as the app's parser reads it: ``--allocator`` before the command,
    else ``MEDBOOST_ALLOCATOR``, else auto. None when the command does not train or measure (no restart for it), or
    when the options before it do not parse (the app then says why in one line)."""
    group = typer.main.get_command(app)
    try:  # resilient: no callbacks act, no help is printed, a bad value reads as None
        ctx = group.make_context("medboost", list(args), resilient_parsing=True)
    except ClickException:
        return None
    # the group stops at its command: the words after the group's options are the command and its own arguments
    rest = len(ctx.args) + 1
    command = args[-rest] if len(args) >= rest else None
    choice = ctx.params.get("allocator")
    if command not in ALLOCATOR_COMMANDS or choice is None:
        return None
    return choices.value(choice)


def _fail(kind: str, message: str, code: int):
    err_console.print(f"[bold red]{kind}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _usage_error(e: ClickException) -> str:
    """A command-line mistake (missing argument, bad value or choice, unknown option) as one line that names the
    command's --help, instead of typer's usage box."""
    message = " ".join(line.strip() for line in e.format_message().splitlines() if line.strip())
    ctx = getattr(e, "ctx", None)
    return f"{message.rstrip('.')}; see `{ctx.command_path} --help`" if ctx is not None else message


def main() -> None:
    """The console script: the allocator restart (``allocator_choice``, ``allocator.start_on``), then the app;
    every error ends in one line on stderr and the exit code of its class (errors.py); command-line mistakes are
    configuration errors (exit 2)."""
    completing = os.environ.get("COMP_WORDS", "") + " " + os.environ.get("_TYPER_COMPLETE_ARGS", "")
    choice = None if completing.strip() else allocator_choice(sys.argv[1:])
    if choice is not None:  # before anything else: os.execve on the chosen allocator, or nothing
        try:
            start_on(choice)
        except MedboostError as e:
            _fail(e.kind, str(e), e.exit_code)
    choices.use_registry_choices(sys.argv[1:] + completing.split())
    _run_app()


def _run_app() -> None:
    """The typer app, its errors as one line each and its exit code passed on."""
    try:
        # click's errors come here instead of typer's multi-line box; "medboost" in usage lines and completion
        # whether started as the console script or as python -m medboost_cli
        code = app(prog_name="medboost", standalone_mode=False)
    except MedboostError as e:
        _fail(e.kind, str(e), e.exit_code)
    except ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `medboost`: the help is printed already
            sys.exit(e.exit_code)
        _fail(ConfigError.kind, _usage_error(e), ConfigError.exit_code)
    except typer.Abort:  # end of input at a prompt
        _fail("aborted", "no input", EXIT_INTERNAL)
    except Exception as e:  # a bug: say so in one line; MEDBOOST_DEBUG=1 shows where
        if os.environ.get("MEDBOOST_DEBUG"):
            raise
        kind, message, code = explain(e)
        _fail(kind, message, code)
    if isinstance(code, int) and code:  # typer.Exit(code) in non-standalone mode: Ctrl-C (130), SIGTERM (143)
        sys.exit(code)
