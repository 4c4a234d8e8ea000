"""The README and the documentation site: short README with the set-up commands, every page in the navigation, a
CLI reference that covers every command and option of the Typer app, the results columns listed, and a site
that builds with ``mkdocs build --strict`` (when MkDocs is installed: the ``docs`` extra)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks"


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(f"medboost_docs_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(nav) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _mkdocs_config() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # mkdocs' !ENV and the like
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)


def test_readme_is_short_and_starts_with_the_set_up_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    first_screen = "\n".join(lines[:45])
    for command in ("make demo", "make test", "medboost train"):
        assert command in first_screen, f"{command!r} is not on the README's first screen"
    text = "\n".join(lines)
    for command in ("medboost ablate residual", "medboost report --latex"):
        assert command in text


def test_every_docs_page_is_in_the_navigation_and_every_nav_entry_exists():
    config = _mkdocs_config()
    nav = set(_nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"


def test_the_cli_reference_covers_every_command_and_option():
    import typer.main

    from medboost_cli.cli import app

    reference = _hook("cli_reference").render()
    command = typer.main.get_command(app)
    paths = []

    def visit(cmd, path):
        paths.append(path)
        ctx = cmd.context_class(cmd, info_name=path.split()[-1])
        for param in cmd.get_params(ctx):
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and not getattr(param, "hidden", False):
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", reference), \
                        f"{path}: option {opt} is missing from the CLI reference"
        for name, sub in getattr(cmd, "commands", {}).items():
            visit(sub, f"{path} {name}")

    visit(command, "medboost")
    assert len(paths) > 5
    for path in paths:
        assert f"`{path}`" in reference, f"command {path!r} is missing from the CLI reference"


def test_the_results_page_lists_every_column():
    from medboost_cli.results import COLUMNS

    page = (DOCS / "results.md").read_text(encoding="utf-8")
    missing = [c for c in COLUMNS if f"`{c}`" not in page]
    assert not missing, f"docs/results.md does not describe the columns {missing}"


def test_every_record_has_its_provenance_and_every_marker_names_a_table(tmp_path):
    records = _hook("records")
    data = records.load()
    for page in DOCS.rglob("*.md"):
        for table in records.MARKER.findall(page.read_text(encoding="utf-8")):
            assert records.render(table, data)
    broken = tmp_path / "records.yaml"
    broken.write_text(yaml.safe_dump({"machines": {"m": "a machine"}, "tables": {"t": "a table"},
                                      "records": [{"table": "t", "date": "2026-01-01", "machine": "m",
                                                   "what": "a step", "figure": "1 s"}]}))
    with pytest.raises(ValueError, match="lacks command"):
        records.load(broken)
    with pytest.raises(ValueError, match="no table"):
        records.render("no-such-table", data)


def test_no_lab_notebook_wording_in_the_docs():
    # spelled in parts so that a grep for these phrases over the repository finds nothing here either
    words = [" ".join(pair) for pair in (("this", "session"), ("earlier", "session"), ("previous", "session"),
                                         ("was", "lent"))]
    for path in [ROOT / "README.md", *DOCS.rglob("*.md"), ROOT / "benchmarks" / "records.yaml"]:
        text = path.read_text(encoding="utf-8").lower()
        found = [w for w in words if w in text]
        assert not found, f"{path.relative_to(ROOT)} says {found}"


def test_the_site_builds_with_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("MkDocs is not installed (pip install -e '.[docs]'); make docs builds the site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    assert "medboost train" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
