"""The host-memory allocator: which one a process runs on, when medboost starts itself again on another, the one-line
errors, and that results do not depend on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medboost_cli import allocator
from medboost_cli.allocator import restart_environment, started_as_medboost
from medboost_cli.cli import allocator_choice
from medboost_cli.errors import ConfigError

from .conftest import TINY_SETS, write_medmnist
from .test_cli import SOURCE_ROOT

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1311 /usr/bin/python3.11
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0
7f1e2d1c0000-7f1e2d1e6000 r--p 00000000 08:01 2201 /usr/lib/x86_64-linux-gnu/libc.so.6
{extra}7ffd4b3f2000-7ffd4b413000 rw-p 00000000 00:00 0                          [stack]
"""


@pytest.mark.parametrize("extra, expected", [
    ("7f1e2e000000-7f1e2e020000 r-xp 00000000 08:01 3301 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n",
     "tcmalloc"),
    ("7f1e2e000000-7f1e2e020000 r-xp 00000000 08:01 3301 /opt/conda/lib/libjemalloc.so.2\n", "jemalloc"),
    ("7f1e2e000000-7f1e2e020000 r-xp 00000000 08:01 3301 /venv/lib/python3.11/site-packages/cmeel.prefix/lib/"
     "libmimalloc.so.3\n", "mimalloc"),
    ("", "glibc"),
])
def test_in_use_reads_the_mapped_libraries(tmp_path, extra, expected):
    maps = tmp_path / "maps"
    maps.write_text(MAPS.format(extra=extra))
    assert allocator.in_use(maps) == expected
    assert allocator.in_use(tmp_path / "missing") == "system"


def test_this_process_reports_what_ld_preload_gave_it():
    """Read from the real /proc/self/maps of a fresh interpreter: glibc without a preload, the library with one."""
    code = "from medboost_cli.allocator import in_use; print(in_use())"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert plain.stdout.strip() == "glibc", plain.stderr
    library = allocator.find("tcmalloc") or allocator.find("jemalloc")
    if library is None:
        pytest.skip("neither tcmalloc nor jemalloc is installed on this machine")
    preloaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               env={**env, "LD_PRELOAD": library})
    assert preloaded.stdout.strip() == ("tcmalloc" if "tcmalloc" in library else "jemalloc"), preloaded.stderr


def found(allocator_name: str) -> str | None:
    return {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2",
            "mimalloc": "/venv/cmeel.prefix/lib/libmimalloc.so.3"}.get(allocator_name)


def only_mimalloc(allocator_name: str) -> str | None:
    return found(allocator_name) if allocator_name == "mimalloc" else None


def not_found(allocator_name: str) -> None:
    return None


def test_auto_preloads_tcmalloc_keeps_the_users_preload_and_marks_the_restart():
    env = restart_environment("auto", {"PATH": "/bin", "LD_PRELOAD": "/opt/mine.so"}, "glibc", found, "linux")
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 /opt/mine.so"
    assert env["PATH"] == "/bin" and env[allocator.TRIED] == "tcmalloc"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 2**40  # no stderr line per large block
    je = restart_environment("jemalloc", {}, "glibc", found, "linux")
    assert je["LD_PRELOAD"] == "libjemalloc.so.2" and "dirty_decay_ms:-1" in je["MALLOC_CONF"]


def test_auto_takes_the_mimalloc_medboost_installs_where_the_system_has_no_tcmalloc():
    env = restart_environment("auto", {}, "glibc", only_mimalloc, "linux")
    assert env["LD_PRELOAD"] == "/venv/cmeel.prefix/lib/libmimalloc.so.3" and env[allocator.TRIED] == "mimalloc"
    assert env["MIMALLOC_PURGE_DELAY"] == "-1"  # freed pages stay for the next step
    assert restart_environment("auto", {}, "mimalloc", only_mimalloc, "linux") is None  # already on it


def test_the_mimalloc_wheel_is_found_in_its_distribution():
    """medboost depends on cmeel-mimalloc on x86-64 Linux; its library is found by the distribution's file list,
    not by the system's loader cache."""
    import platform
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("cmeel-mimalloc is a dependency on x86-64 Linux only")
    path = allocator.bundled("mimalloc")
    assert path is not None and Path(path).is_file() and Path(path).name == "libmimalloc.so.3"
    assert allocator.find("mimalloc") is not None
    assert allocator.bundled("jemalloc") is None


@pytest.mark.parametrize("choice, current, environ, platform", [
    ("system", "glibc", {}, "linux"),            # never preloads
    ("auto", "jemalloc", {}, "linux"),           # the user's own preload stays
    ("tcmalloc", "tcmalloc", {}, "linux"),       # already on it (after the restart)
    ("auto", "glibc", {allocator.TRIED: "tcmalloc"}, "linux"),  # a restart that did not take: no loop
    ("auto", "system", {}, "darwin"),            # no LD_PRELOAD there
])
def test_no_restart(choice, current, environ, platform):
    assert restart_environment(choice, environ, current, found, platform) is None


def test_a_nested_medboost_may_choose_another_allocator_than_its_parent():
    """A parent's restart marker and preload (tcmalloc) do not stop a child asked for jemalloc: the child preloads
    jemalloc instead of tcmalloc, and keeps the user's own preloads."""
    inherited = {allocator.TRIED: "tcmalloc", "LD_PRELOAD": "libtcmalloc_minimal.so.4 /opt/mine.so"}
    env = restart_environment("jemalloc", inherited, "tcmalloc", found, "linux")
    assert env["LD_PRELOAD"] == "libjemalloc.so.2 /opt/mine.so" and env[allocator.TRIED] == "jemalloc"


def test_auto_without_a_library_stays_on_the_system_allocator():
    assert restart_environment("auto", {}, "glibc", not_found, "linux") is None


@pytest.mark.parametrize("choice, current, environ, finder, platform, message", [
    ("jemalloc", "glibc", {}, not_found, "linux", "--allocator jemalloc: libjemalloc is not installed; install it "
                                                  "(apt install libjemalloc2"),
    ("tcmalloc", "glibc", {}, not_found, "linux", "apt install libtcmalloc-minimal4"),
    ("tcmalloc", "glibc", {allocator.TRIED: "tcmalloc", "LD_PRELOAD": "x.so"}, found, "linux",
     "started again with LD_PRELOAD=x.so but tcmalloc is not in use"),
    ("tcmalloc", "system", {}, found, "darwin", "--allocator tcmalloc needs Linux (LD_PRELOAD)"),
    ("hoard", "glibc", {}, found, "linux", "'hoard' is not an allocator; use one of auto, system"),
    ("mimalloc", "glibc", {}, not_found, "linux", "pip install cmeel-mimalloc"),
])
def test_what_cannot_be_done_is_one_config_error(choice, current, environ, finder, platform, message):
    with pytest.raises(ConfigError, match=None) as e:
        restart_environment(choice, environ, current, finder, platform)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("orig_argv, expected", [
    (["/venv/bin/python", "/venv/bin/medboost", "train", "breast"], True),
    (["python3", "-m", "medboost_cli", "bench"], True),
    (["python3", "-X", "importtime", "-m", "medboost_cli", "bench"], True),
    (["python3", "-m", "pytest", "tests"], False),      # cli.main() called in a test must not replace pytest
    (["python3", "-c", "from medboost_cli.cli import main; main()", "train"], False),
    (["python3", "/home/me/medboost_study.py"], False),
])
def test_only_medboost_itself_starts_again(orig_argv, expected):
    assert started_as_medboost(orig_argv) is expected


@pytest.mark.parametrize("words, env, expected", [
    (["--allocator", "jemalloc", "train", "breast"], None, "jemalloc"),
    (["--allocator=system", "bench", "--shape", "2d-224"], None, "system"),
    (["train", "breast", "--allocator", "auto"], None, "system"),  # an option of train's, not the global one
    (["bench"], "system", "system"),
    (["evaluate", "run-id"], None, "system"),  # the default: no restart unless asked for
    (["ablate", "residual"], None, "system"),
    (["ablate", "residual"], "auto", "auto"),
    (["report", "--latex"], None, None),        # does not train or measure: never started again
    (["runs"], "jemalloc", None),
    (["--version"], None, None),
    ([], None, None),
    (["--allocator", "hoard", "train"], None, None),  # not a choice: the app's own parse says so
    (["--allocator", "bench"], None, None),             # "bench" is the option's (bad) value, not the command
])
def test_the_command_line_choice(monkeypatch, words, env, expected):
    if env is None:
        monkeypatch.delenv("MEDBOOST_ALLOCATOR", raising=False)
    else:
        monkeypatch.setenv("MEDBOOST_ALLOCATOR", env)
    assert allocator_choice(words) == expected


def test_reading_the_choice_prints_nothing_and_runs_no_callback(capsys):
    """The entry reads the options with the app's parser before the app runs: --version and --help act only
    once, in the app."""
    for words in (["--version"], ["--help"], ["train", "--help"], ["--allocator", "system", "--version", "bench"]):
        allocator_choice(words)
    assert capsys.readouterr() == ("", "")


def medboost(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The console script, as a user starts it (its restart is an execve of this very process)."""
    script = Path(sys.executable).with_name("medboost")
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**env, "PYTHONPATH": str(SOURCE_ROOT)})


def test_a_bad_choice_is_one_line_and_exit_2():
    out = medboost("--allocator", "hoard", "train", "breast", env={**os.environ})
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "hoard" in out.stderr and "auto" in out.stderr, out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("other", ["tcmalloc", "mimalloc"])
def test_a_run_on_a_caching_allocator_gives_the_same_results_as_on_glibc(tmp_path, other):
    """The console script restarts itself on tcmalloc or mimalloc (the run's device says so) and trains the same
    run to the same bits as on glibc: the allocator changes where memory comes from, not what is computed in it."""
    if allocator.find(other) is None:
        pytest.skip(f"{other} is not installed on this machine ({allocator.INSTALL[other]})")
    write_medmnist(tmp_path / "d", "breast")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.TRIED)}
    rows = {}
    for choice in ("system", other):
        out = medboost("--allocator", choice, "train", "breast", "--preset", "cpu", *sets, "--data-dir",
                       tmp_path / "d", "--results-dir", tmp_path / choice, "--quiet", env=env)
        assert out.returncode == 0, out.stderr
        (row_file,) = (tmp_path / choice / "runs").glob("*.parquet")
        rows[choice] = pd.read_parquet(row_file).iloc[0]
    glibc, tc = rows["system"], rows[other]
    assert glibc.device.endswith("glibc malloc)") and tc.device.endswith(f"{other})")
    assert glibc.run_id == tc.run_id  # the allocator is not part of a run's identity
    assert (glibc.test_auc, glibc.test_acc, glibc.val_auc, glibc.best_epoch) == \
        (tc.test_auc, tc.test_acc, tc.val_auc, tc.best_epoch)
    assert np.array_equal(np.stack(glibc.test_scores), np.stack(tc.test_scores))
