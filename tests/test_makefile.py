"""The Makefile's choice of data folder, on a copy of it: the shared folder beside the checkout when it exists,
else MEDBOOST_DATA unset (medboost's ~/.medmnist), never overriding the user's own; and `make demo` downloads first.
Runs only make itself (no venv, no medboost): the recipes are printed with -n, or are a one-line echo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

# What the commands of a recipe see, "unset" when the variable is not in their environment at all.
SHOW = 'show-data: ; @echo "MEDBOOST_DATA=[$${MEDBOOST_DATA-unset}]"'


def _checkout(tmp_path: Path, shared: bool) -> Path:
    repo = tmp_path / "checkout"
    repo.mkdir()
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    (repo / "pyproject.toml").touch()
    if shared:
        (tmp_path / "shared" / "medmnist").mkdir(parents=True)
    return repo


def _make(repo: Path, *args: str, env_data: str | None = None, cwd: Path | None = None) -> str:
    """make with the copied Makefile, run in ``cwd`` (default: a folder elsewhere, whose ../shared is not the
    checkout's: the data folder must not depend on where make runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MEDBOOST_DATA", "MAKEFLAGS", "MFLAGS")}
    if env_data is not None:
        env["MEDBOOST_DATA"] = env_data
    elsewhere = repo.parent / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["make", "--no-print-directory", "-f", str(repo / "Makefile"), *args], cwd=cwd or elsewhere,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(("shared", "env_data", "expected"), [
    (True, None, "{shared}"),  # this project's machines
    (False, None, "unset"),  # a fresh machine elsewhere: medboost's default ~/.medmnist
    (True, "/my/data", "/my/data"),  # the user's own choice wins
    (False, "/my/data", "/my/data"),
])
def test_data_folder_for_the_recipes(tmp_path, shared, env_data, expected):
    repo = _checkout(tmp_path, shared)
    out = _make(repo, "--eval", SHOW, "show-data", env_data=env_data)
    assert out.strip() == f"MEDBOOST_DATA=[{expected.format(shared=tmp_path / 'shared' / 'medmnist')}]"


def test_demo_downloads_before_training(tmp_path):
    repo = _checkout(tmp_path, shared=False)
    commands = _make(repo, "-n", "demo", cwd=repo).splitlines()
    download = next(i for i, c in enumerate(commands) if c.endswith("medboost download breast"))
    train = next(i for i, c in enumerate(commands) if "medboost train breast" in c)
    assert download < train


def test_the_tests_run_in_fp32_then_their_numerical_core_in_bf16(tmp_path):
    """`make test` runs the whole suite with precision auto pinned to fp32 and then a set of it forced to bf16, so
    every CPU checks both; every test file of the bf16 set exists."""
    repo = _checkout(tmp_path, shared=False)
    commands = [c for c in _make(repo, "-n", "test", cwd=repo).splitlines() if "-m pytest" in c]
    assert len(commands) == 2
    fp32, bf16 = commands
    assert fp32.startswith("MEDBOOST_AUTO_PRECISION=fp32 ") and "tests/" not in fp32  # the whole suite
    assert bf16.startswith("MEDBOOST_AUTO_PRECISION=bf16 ")
    selected = [arg for arg in bf16.split() if arg.startswith("tests/")]
    assert len(selected) >= 5
    for arg in selected:
        path, _, name = arg.partition("::")
        assert (ROOT / path).is_file(), path
        assert not name or f"def {name}(" in (ROOT / path).read_text(), arg


def test_demo_ends_with_the_next_steps(tmp_path):
    """After `make demo` medboost is not on PATH: the demo says how to get it there and what to run next."""
    repo = _checkout(tmp_path, shared=False)
    commands = _make(repo, "-n", "demo", cwd=repo).splitlines()
    train = next(i for i, c in enumerate(commands) if "medboost train breast" in c)
    after = " ".join(commands[train + 1:])
    assert ".venv/bin/activate" in after and "medboost runs" in after and "medboost report" in after
