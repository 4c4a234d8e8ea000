"""--backbone and --booster's choices: the names registered in models/ and recipes.BOOSTER_MODES.

--help lists them, the shell completes them, a typo is a usage error, and a new backbone appears without touching
the CLI. Reading the registries imports torch (seconds), so the commands' annotations name the placeholders below
(``choices.BackboneName``), which ``use_registry_choices`` swaps for the registries' Enums only when the command
line names a command that has the options (typer reads the annotations when it builds the commands): `medboost
--help`, `--version` and the other commands' completion stay instant.
"""

from __future__ import annotations

from enum import Enum
from functools import cache
from typing import Optional

BackboneName: type = str
BoosterMode: type = str
CHOICE_COMMANDS = {"train", "bench"}


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
    global BackboneName, BoosterMode
    if CHOICE_COMMANDS & set(words):
        BackboneName, BoosterMode = registry_choices()


def value(choice) -> Optional[str]:
    """An option's value as a string, whether typer gave the Enum member or the placeholder's string."""
    return getattr(choice, "value", choice)
