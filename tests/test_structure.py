"""The package's shape, held by tests: small units, and no family or launcher chosen by its name outside its
registry (a new family is a module and a registration, never another comparison elsewhere)."""

from __future__ import annotations

import ast
from pathlib import Path

from medboost_cli.launchers import LAUNCHERS
from medboost_cli.models.backbones import BACKBONES
from medboost_cli.models.lm import FAMILIES as LM_FAMILIES

PACKAGE = Path(__file__).resolve().parents[1] / "medboost_cli"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent), path.read_text()


def test_modules_and_functions_stay_small():
    too_long = []
    for name, source in _sources():
        if (n := len(source.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {n} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {n} lines")
    assert not too_long


def _compared_names(source: str) -> set[str]:
    """String constants compared with == / != / in against something, in one module."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                names |= {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
    return names


def test_no_family_or_launcher_is_chosen_by_name_outside_its_registry():
    registries = {
        "launcher": (set(LAUNCHERS), PACKAGE / "launchers"),
        "LM family": (set(LM_FAMILIES), PACKAGE / "models" / "lm"),
        "backbone": (set(BACKBONES), PACKAGE / "models" / "backbones"),
    }
    found = []
    for kind, (names, home) in registries.items():
        assert names
        for path in sorted(PACKAGE.rglob("*.py")):
            if home in path.parents:
                continue
            for name in _compared_names(path.read_text()) & names:
                found.append(f"{path.relative_to(PACKAGE.parent)} compares the {kind} name {name!r}")
    assert not found
