"""medboost as users get it: a wheel that carries its recipes and runs from any folder, and a command line that
lists its choices and environment variables, completes in the shell and answers a mistake with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from medboost_cli import cli
from medboost_cli.models.backbones import BACKBONES
from medboost_cli.recipes import BOOSTER_MODES

from .test_cli import SOURCE_ROOT, assert_one_line_error, run

BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "medboost_cli", "recipes")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the checkout (so the build leaves nothing in the checkout)."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("wheel")
    for name in BUILD_INPUTS:
        source = SOURCE_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / "src").mkdir(exist_ok=True)
            shutil.copy(source, root / "src" / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root / "src"), "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(root / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = (root / "dist").glob("medboost-*.whl")
    return found


@pytest.mark.wheel
def test_the_wheel_carries_every_recipe_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    folder = SOURCE_ROOT / "recipes"
    recipes = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml"))
    assert {"breast.yaml", "base/2d.yaml", "base/3d.yaml", "presets/cpu.yaml", "studies/main2d.yaml"} <= set(recipes)
    missing = [r for r in recipes if f"medboost_cli/recipe_files/{r}" not in names]
    assert not missing, f"recipes missing from the wheel (list their folders in pyproject.toml's packages): {missing}"
    modules = sorted(p.relative_to(SOURCE_ROOT).as_posix() for p in (SOURCE_ROOT / "medboost_cli").rglob("*.py"))
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules missing from the wheel (list their packages in pyproject.toml): {missing}"
    assert not any(n.startswith(("recipes/", "tests/")) for n in names)  # nothing outside the package


@pytest.mark.wheel
def test_the_installed_wheel_reads_its_own_recipes_from_any_folder(wheel, tmp_path):
    """Installed (not editable) into a fresh environment, the console script finds the recipes in the package,
    not in a checkout: run from an empty folder, it expands a study of the cpu preset."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # The dependencies (torch, ...) come from the environment running the tests, after the venv's own packages:
    # a path in a .pth file, whose own .pth files (an editable medboost's) are not run.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDBOOST_RECIPES")}
    where = subprocess.run([str(python), "-c", "import medboost_cli; print(medboost_cli.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(site), (where.stdout, where.stderr[-3000:])  # not the checkout
    assert (site / "medboost_cli" / "recipe_files" / "studies" / "layers.yaml").is_file()
    assert (site / "medboost_cli" / "anchors" / "medmnist_plus.tsv").is_file()  # the anchors' packaged tables
    assert (site / "medboost_cli" / "anchors" / "medmnist_v2.tsv").is_file()
    assert not (site / "recipes").exists()  # so recipes_dir() can only have found the package's copy
    medboost = python.parent / "medboost"
    dry = subprocess.run([str(medboost), "ablate", "layers", "--preset", "cpu", "--seeds", "1", "--dry-run",
                          "--results-dir", str(tmp_path / "results")], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "medboost train breast --backbone vit-mini --booster rllm --seed 0 --preset cpu --set booster.layer=5" \
        in dry.stdout


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def wide(monkeypatch):
    """Help on one line per option (rich wraps at 80 columns when the output is not a terminal)."""
    monkeypatch.setenv("COLUMNS", "250")


def test_help_lists_the_registered_backbones_and_boosters(wide):
    """--backbone and --booster are choices taken from the registries: a new backbone appears by itself."""
    backbones, boosters = cli.registry_choices()
    assert [m.value for m in backbones] == list(BACKBONES) and [m.value for m in boosters] == list(BOOSTER_MODES)
    for command in ("train", "bench"):
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"<{'|'.join(BOOSTER_MODES)}>" in result.stdout or f"<list[{'|'.join(BOOSTER_MODES)}]>" in result.stdout
        assert f"<{'|'.join(BACKBONES)}>" in result.stdout


def test_help_shows_the_environment_variables(wide):
    for command in ("train", "ablate", "evaluate", "report"):
        text = run(command, "--help").stdout
        assert "[env var: MEDBOOST_RESULTS]" in text, command
    assert "[env var: MEDBOOST_DATA]" in run("train", "--help").stdout


def test_environment_variables_choose_the_folders_and_an_option_wins(tmp_path, monkeypatch):
    from medboost_cli import engine

    seen = []

    def fake_train(recipe, data_dir, results_dir, **kwargs):
        seen.append((Path(data_dir), Path(results_dir)))
        raise SystemExit(0)

    monkeypatch.setattr(engine, "train", fake_train)
    monkeypatch.setenv("MEDBOOST_DATA", str(tmp_path / "env-data"))
    monkeypatch.setenv("MEDBOOST_RESULTS", str(tmp_path / "env-results"))
    assert run("train", "breast", "--preset", "cpu").returncode == 0
    assert run("train", "breast", "--preset", "cpu", "--data-dir", tmp_path / "d", "--results-dir", tmp_path / "r")\
        .returncode == 0
    monkeypatch.delenv("MEDBOOST_DATA")
    assert run("train", "breast", "--preset", "cpu").returncode == 0
    assert seen == [(tmp_path / "env-data", tmp_path / "env-results"), (tmp_path / "d", tmp_path / "r"),
                    (Path("~/.medmnist").expanduser(), tmp_path / "env-results")]


@pytest.mark.parametrize("args, fragment", [
    (("train",), "Missing argument"),
    (("train", "breast", "--seed", "1e23"), "'--seed'"),
    (("train", "breast", "--backbone", "vit-x"), "'vit-x' is not one of 'vit-s'"),
    (("train", "breast", "--backbone", "VIT-S"), "'VIT-S' is not one of"),  # case-sensitive
    (("train", "breast", "--booster", "rlm"), "'rlm' is not one of 'none', 'rllm'"),
    (("bench", "breast", "--booster", "rlm"), "'rlm' is not one of"),
    (("train", "breast", "--epoch", "3"), "No such option: --epoch"),
    (("trian",), "No such command 'trian'"),
    (("report", "gradcam"), "Missing argument"),
])
def test_a_command_line_mistake_is_one_config_error_line(args, fragment):
    result = run(*args)
    assert_one_line_error(result, fragment, "--help`", code=2)
    assert result.stdout == ""


def test_a_seed_beyond_what_the_random_generators_take_is_a_config_error(tmp_path):
    """An integer the parser accepts but torch's generators do not (it used to fail as an internal error)."""
    for args in (("--seed", str(10**23)), ("--seed", "-1"), ("--set", f"seed={2**32}")):
        assert_one_line_error(run("train", "breast", *args, "--results-dir", tmp_path), "bad value for 'seed'",
                              code=2)


def test_help_version_and_a_bare_command_still_print_their_text():
    from medboost_cli import __version__

    version = run("--version")
    assert (version.returncode, version.stdout.strip(), version.stderr) == (0, f"medboost {__version__}", "")
    helped = run("train", "--help")
    assert helped.returncode == 0 and "Usage: medboost train" in helped.stdout and helped.stderr == ""
    bare = run()
    assert bare.returncode == 2 and "Usage: medboost" in bare.stdout and "train" in bare.stdout


def test_help_version_and_completion_do_not_wait_for_torch():
    """The registries behind the choices import torch; a command line that cannot need them does not read them."""
    probe = ("import atexit, sys; atexit.register(lambda: print('torch' in sys.modules)); "
             "sys.argv = ['medboost', *sys.argv[1:]]; from medboost_cli.cli import main; main()")
    for args in (["--version"], ["--help"], ["report", "--help"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT), "COLUMNS": "250"})
        assert out.returncode == 0 and out.stdout.splitlines()[-1] == "False", (args, out.stdout[-500:], out.stderr)


def test_shell_completion_is_offered_and_completes_the_choices(monkeypatch, wide):
    # --show-completion names its shell: without this typer detects the shell that started the process, and a test
    # worker (or CI) has none it knows
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    top = run("--help").stdout
    assert "--install-completion" in top and "--show-completion" in top
    script = run("--show-completion", "bash")
    assert script.returncode == 0 and "_MEDBOOST_COMPLETE=complete_bash" in script.stdout
    monkeypatch.setenv("_MEDBOOST_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "medboost train breast --backbone vivit")
    monkeypatch.setenv("COMP_CWORD", "4")
    completed = run()
    assert completed.returncode == 0 and completed.stdout.split() == [n for n in BACKBONES if n.startswith("vivit")]


def test_ctrl_c_outside_training_exits_130_quietly(monkeypatch, tmp_path):
    import medboost_cli.report as report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "make_report", interrupted)
    (tmp_path / "runs").mkdir()
    result = run("report", "--results-dir", tmp_path)
    assert result.returncode == 130 and "Traceback" not in result.stderr
