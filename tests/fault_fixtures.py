"""What the fault tests share: a tiny completed run, its copy per test, and checks that a result was kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medboost_cli.results import ResultsDir, load_results, read_row

from .conftest import TINY_SETS, write_medmnist
from .test_cli import run

SETS = [a for s in TINY_SETS for a in ("--set", s)]


def train_args(data: Path, results: Path, *extra) -> list:
    return ["train", "breast", "--preset", "cpu", "--booster", "none", *SETS, "--data-dir", data, "--results-dir",
            results, "--quiet", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock folder aside, which holds nothing once a run ends)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> tuple[Path, Path, str]:
    """A completed tiny run: (data folder, results folder, run id)."""
    root = tmp_path_factory.mktemp("completed")
    write_medmnist(root / "d", "breast")
    done = run(*train_args(root / "d", root / "r"))
    assert done.returncode == 0, done.stderr
    (row,) = (root / "r" / "runs").glob("*.parquet")
    return root / "d", root / "r", row.stem


@pytest.fixture
def folder(completed, tmp_path) -> tuple[Path, Path, str]:
    data, results, run_id = completed
    return data, Path(shutil.copytree(results, tmp_path / "r")), run_id


def assert_result_kept(results: Path, run_id: str, before: dict[str, bytes]) -> None:
    """The completed row and best.pt byte for byte as they were; the row reads as completed; no temporary file."""
    layout = ResultsDir(results)
    for path in (layout.row(run_id), layout.best(run_id)):
        key = str(path.relative_to(results))
        assert path.read_bytes() == before[key], key
    assert read_row(results, run_id)["status"] == "completed"
    assert list(load_results(results)["status"]) == ["completed"]
    assert not list(results.rglob("*.tmp"))
