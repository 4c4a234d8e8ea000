"""The options that take one of a fixed set of names: --backbone and --booster (the names registered in models/
and recipes.BOOSTER_MODES), --preset (recipes/presets/*.yaml), --status (results.RUN_STATUSES) and --split.

--help lists them, the shell completes them, a typo is a usage error, and a new backbone appears without touching
the CLI. Reading the registries imports torch (seconds), so the commands' annotations name the placeholders below
(``choices.BackboneName``), which ``use_registry_choices`` swaps for the registries' Enums only when the command
line names a command that has the options (typer reads the annotations when it builds the commands): `medboost
--help`, `--version` and the other commands' completion stay instant.
"""

from __future__ import annotations

import difflib
import re
from enum import Enum
from functools import cache
from typing import Optional

BackboneName: type = str
BoosterMode: type = str
PresetName: type = str
RunStatus: type = str
CHOICE_COMMANDS = {"train", "bench"}
PRESET_COMMANDS = {"train", "bench", "ablate"}
STATUS_COMMANDS = {"runs"}


class Split(str, Enum):
    """The split ``evaluate`` scores."""

    val = "val"
    test = "test"


@cache
def registry_choices() -> tuple[type[Enum], type[Enum]]:
    """(backbone names, booster modes) as case-sensitive Enums."""
    from ..models.backbones import BACKBONES
    from ..recipes import BOOSTER_MODES

    return (Enum("BackboneName", {n: n for n in BACKBONES}, type=str),
            Enum("BoosterMode", {n: n for n in BOOSTER_MODES}, type=str))


def use_registry_choices(words: list[str]) -> None:
    """The registries' choices for --backbone and --booster if ``words`` (the arguments, or the words being
    completed) name a command that has them."""
    global BackboneName, BoosterMode, PresetName, RunStatus
    if CHOICE_COMMANDS & set(words):
        BackboneName, BoosterMode = registry_choices()
    if PRESET_COMMANDS & set(words):
        PresetName = preset_choices()
    if STATUS_COMMANDS & set(words):
        from ..results import RUN_STATUSES

        RunStatus = Enum("RunStatus", {n: n for n in RUN_STATUSES}, type=str)


def preset_choices() -> type[Enum]:
    """The presets in the recipes folder (recipes/presets/NAME.yaml) as an Enum."""
    from ..recipes import recipes_dir

    return Enum("PresetName", {p.stem: p.stem for p in sorted((recipes_dir() / "presets").glob("*.yaml"))}, type=str)


_NOT_ONE_OF = re.compile(r"'([^']*)' is not one of ((?:'[^']*'(?:, )?)+)")


def did_you_mean(message: str) -> str:
    """A usage error about a value that is none of the choices, with the closest choice suggested."""
    message = message.replace(": Value error, ", ": ")  # the enum conversion's own prefix says nothing more
    found = _NOT_ONE_OF.search(message)
    if not found:
        return message
    close = difflib.get_close_matches(found.group(1), re.findall(r"'([^']*)'", found.group(2)), n=1, cutoff=0.5)
    return message[:found.end()] + (f" (did you mean '{close[0]}'?)" if close else "") + message[found.end():]


def value(choice) -> Optional[str]:
    """An option's value as a string, whether typer gave the Enum member or the placeholder's string."""
    return getattr(choice, "value", choice)


