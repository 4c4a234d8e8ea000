"""The package's modules import each other without cycles, counting the imports inside functions too: each layer
builds on the ones below it (run_ids and compat under recipes, recipes under results, results under the engine)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medboost_cli"


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, whether it is a package's __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its file (``if TYPE_CHECKING:`` blocks aside)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skipped or not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = name.split(".")[: len(name.split(".")) - (node.level - (1 if package else 0))]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                module = f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                if module in modules and module != name:
                    graph[name].add(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert "medboost_cli.recipes" in graph["medboost_cli.results.checks"]  # the graph sees relative imports
    assert cycles(graph) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_compatibility_and_run_id_modules_import_nothing_of_the_package():
    graph = import_graph()
    assert graph["medboost_cli.compat"] == set()
    assert graph["medboost_cli.run_ids"] == {"medboost_cli.errors"}
    assert "medboost_cli.results" not in graph["medboost_cli.recipes"]


def test_every_package_folder_ships_in_the_wheel():
    """pyproject.toml lists the packages by name (the recipes folder is mapped into the package): a new subpackage
    missing from the list would import from a checkout and fail from an installed wheel."""
    import tomllib

    root = PACKAGE.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found and found <= listed, sorted(found - listed)
