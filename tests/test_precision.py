"""Precision ``auto`` decided by a measurement (precision.py): on a CPU with bf16 instructions bf16 only where its
training step is faster by the margin, the decision cached per machine and shape, the environment's pin and a
recipe's own precision taking precedence. The CPU's instructions and the step timings are faked, so every case
runs on whichever CPU runs the tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medboost_cli import precision
from medboost_cli.engine import evaluate_run, train
from medboost_cli.errors import ConfigError
from medboost_cli.hardware import AUTO_PRECISION_ENV
from medboost_cli.recipes import load_recipe

from .conftest import TINY_SETS

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A CPU with bf16 instructions, no precision pinned, and the cache in the test's own folder."""
    monkeypatch.delenv(AUTO_PRECISION_ENV, raising=False)
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    path = tmp_path / "cache" / "precision.json"
    monkeypatch.setenv(precision.CACHE_ENV, str(path))
    return path


class FakeStep:
    """Seconds per step by precision, counting the recipes it was asked to time."""

    def __init__(self, fp32: float, bf16: float):
        self.seconds = {"fp32": fp32, "bf16": bf16}
        self.asked: list = []

    def __call__(self, recipe) -> float:
        self.asked.append(recipe)
        return self.seconds[recipe.train.precision]


def never(recipe) -> float:
    raise AssertionError("measured where nothing should be")


def tiny(*sets: str):
    return load_recipe("breast", preset="cpu", sets=[*TINY_SETS, *sets])


@pytest.mark.parametrize("fp32, bf16, chosen", [
    (0.655, 0.412, "bf16"),  # bf16 faster by 37%
    (0.400, 0.600, "fp32"),  # bf16 slower (emulated, say)
    (0.400, 0.380, "fp32"),  # faster by 5%, under the 10% margin
])
def test_auto_takes_bf16_only_where_its_measured_step_is_faster_by_the_margin(cache, fp32, bf16, chosen):
    step = FakeStep(fp32, bf16)
    recipe = tiny("booster.mode=rllm")
    decision = precision.decide(recipe, CPU, step=step)
    assert decision.name == chosen and decision.how == "measured"
    assert (decision.fp32_ms, decision.bf16_ms) == (pytest.approx(fp32 * 1e3), pytest.approx(bf16 * 1e3))
    # each precision timed once, both auto keys set alike, without compile, on the run's device
    assert [(r.train.precision, r.booster.dtype) for r in step.asked] == [("fp32", "fp32"), ("bf16", "bf16")]
    assert all(r.train.compile is False and r.train.device == "cpu" for r in step.asked)
    built = precision.resolved(recipe, decision)
    assert (built.train.precision, built.booster.dtype) == (chosen, chosen)


def test_the_decision_is_cached_once_per_shape_and_read_back(cache, capsys):
    step = FakeStep(0.655, 0.412)
    recipe = tiny()
    first = precision.decide(recipe, CPU, step=step)
    again = precision.decide(tiny("train.lr=1e-3", "seed=3"), CPU, step=step)  # same shape: not measured again
    assert len(step.asked) == 2 and again.how == "cached" and again.name == first.name == "bf16"
    assert (again.fp32_ms, again.bf16_ms) == (first.fp32_ms, first.bf16_ms)
    stored = json.loads(cache.read_text())
    assert len(stored["entries"]) == 1
    key = stored["entries"][0]["key"]
    assert key["batch"] == 16 and key["threads"] == torch.get_num_threads() and key["torch"] == torch.__version__
    assert first.line() == (f"precision auto → bf16: 412 ms vs 655 ms per step (fp32), measured on {key['cpu']}, "
                            f"{key['threads']} threads; cached in {cache}")
    assert again.line().endswith(f"; from the cache {cache}")
    precision.decide(tiny("train.batch_size=8"), CPU, step=step)  # another shape: measured, kept beside
    assert len(step.asked) == 4 and len(json.loads(cache.read_text())["entries"]) == 2
    assert capsys.readouterr().err == ""


def test_the_environment_and_the_device_decide_without_measuring(cache, monkeypatch):
    recipe = tiny()
    for forced in ("bf16", "fp32"):
        monkeypatch.setenv(AUTO_PRECISION_ENV, forced)
        decision = precision.decide(recipe, CPU, step=never)
        assert decision.name == forced and decision.how == "forced" and decision.line() is None
    monkeypatch.setenv(AUTO_PRECISION_ENV, "fp16")
    with pytest.raises(ConfigError, match="MEDBOOST_AUTO_PRECISION='fp16' is not a precision"):
        precision.decide(recipe, CPU, step=never)
    monkeypatch.delenv(AUTO_PRECISION_ENV)
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)  # an AVX2-only CPU
    assert precision.decide(recipe, CPU, step=never).name == "fp32"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: device.type == "cuda")
    gpu = precision.decide(recipe, torch.device("cuda"), step=never)  # a GPU with bf16: the device's rule
    assert gpu.name == "bf16" and gpu.how == "device"
    assert not cache.exists()


def test_a_precision_the_recipe_names_is_never_overridden(cache):
    assert precision.decide(tiny("train.precision=fp32", "booster.dtype=bf16"), CPU, step=never) is None
    assert precision.decide(tiny("train.precision=fp32", "booster.mode=none"), CPU, step=never) is None  # no LM
    step = FakeStep(0.655, 0.412)
    named = tiny("train.precision=fp32", "booster.mode=rllm")  # only the frozen LM's storage says auto
    decision = precision.decide(named, CPU, step=step)
    assert [(r.train.precision, r.booster.dtype) for r in step.asked] == [("fp32", "fp32"), ("fp32", "bf16")]
    assert (precision.resolved(named, decision).train.precision, decision.name) == ("fp32", "fp32")


@pytest.mark.parametrize("broken", ["{not json", json.dumps({"format": 1, "entries": [{"key": 1}]}),
                                    json.dumps(["a list"]), json.dumps({"format": 99, "entries": []})])
def test_a_broken_cache_is_ignored_with_one_warning_and_rewritten(cache, capsys, broken):
    cache.parent.mkdir(parents=True)
    cache.write_text(broken)
    step = FakeStep(0.4, 0.6)
    decision = precision.decide(tiny(), CPU, step=step)
    assert decision.how == "measured" and decision.name == "fp32" and len(step.asked) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {cache}: ") and "rewriting it" in err[0]
    assert len(json.loads(cache.read_text())["entries"]) == 1
    assert precision.decide(tiny(), CPU, step=never).how == "cached"  # the rewritten file serves
    assert capsys.readouterr().err == ""


def test_a_cache_that_cannot_be_written_leaves_the_decision_unkept_with_one_warning(cache, capsys, tmp_path,
                                                                                    monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(precision.CACHE_ENV, str(blocker / "precision.json"))  # its folder is a file
    decision = precision.decide(tiny(), CPU, step=FakeStep(0.655, 0.412))
    assert decision.name == "bf16" and decision.cache is None and decision.line().endswith("; not cached")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: could not write the precision cache")


def test_the_cache_lives_under_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(precision.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert precision.cache_path() == tmp_path / "xdg" / "medboost" / "precision.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert precision.cache_path() == tmp_path / "home" / ".cache" / "medboost" / "precision.json"


def test_the_real_measurement_times_both_precisions_and_leaves_the_rng_alone():
    """The training loop's step on a synthetic batch, in fp32 and bf16 (emulated on a CPU without it), at a tiny
    shape; the global RNG is as it was, so the run after it draws what it would have drawn."""
    recipe = tiny("booster.mode=none", "train.batch_size=4")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    fp32, bf16 = precision.measure_both(recipe, CPU)
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_a_run_prints_and_records_the_decision_and_evaluate_follows_it(cache, monkeypatch, data_dir, results_dir):
    """A run on a (faked) bf16 CPU whose bf16 step measures faster trains in bf16, says so in one line and keeps
    both timings in its row; scoring it again takes bf16 from the row even where ``auto`` would now be fp32."""
    monkeypatch.setattr(precision, "step_seconds", FakeStep(0.655, 0.412))
    recipe = tiny("booster.mode=none")
    lines: list[str] = []
    row = train(recipe, data_dir, results_dir, log=lines.append)
    assert lines == [f"precision auto → bf16: 412 ms vs 655 ms per step (fp32), measured on "
                     f"{precision.cpu_model()}, {torch.get_num_threads()} threads; cached in {cache}"]
    assert row["precision"] == "bfloat16" and row["run_id"] == recipe.run_id()
    recorded = json.loads(row["run_cost_json"])["precision"]
    assert recorded["auto"] == "bf16" and recorded["how"] == "measured"
    assert (recorded["fp32_ms"], recorded["bf16_ms"]) == (pytest.approx(655), pytest.approx(412))
    monkeypatch.setenv(AUTO_PRECISION_ENV, "fp32")  # auto would now resolve to fp32
    again = evaluate_run(row["run_id"], results_dir, data_dir)
    assert np.array_equal(again["scores"].astype(np.float32), np.array(row["test_scores"], dtype=np.float32))


def test_evaluate_takes_the_precision_a_row_records():
    recipe = tiny()
    bf16 = {"run_cost_json": json.dumps({"precision": {"auto": "bf16"}}), "precision": "bfloat16"}
    assert precision.as_recorded(recipe, bf16).booster.dtype == "bf16"
    assert precision.as_recorded(recipe, {"precision": "bfloat16"}).train.precision == "bf16"  # no decision kept
    assert precision.as_recorded(recipe, {"precision": "fp32"}).booster.dtype == "fp32"
    named = tiny("train.precision=fp32")  # only the storage was auto: the decision says which it took
    kept = precision.as_recorded(named, {"run_cost_json": json.dumps({"precision": {"auto": "bf16"}}),
                                         "precision": "fp32"})
    assert (kept.train.precision, kept.booster.dtype) == ("fp32", "bf16")
    assert precision.as_recorded(named, {"precision": "fp32"}).booster.dtype == "auto"  # the device's rule


def test_bench_measures_both_precisions_where_auto_would_measure(cache, monkeypatch):
    both = precision.bench_candidates(tiny("train.device=cpu"))
    assert [r.train.precision for r in both] == ["fp32", "bf16"]
    assert precision.bench_candidates(tiny("train.precision=fp32"))[0].train.precision == "fp32"
    monkeypatch.setenv(AUTO_PRECISION_ENV, "fp32")
    assert [r.train.precision for r in precision.bench_candidates(tiny())] == ["auto"]


def test_medboost_bench_shows_a_table_for_each_precision_where_auto_would_measure(cache, monkeypatch):
    from typer.testing import CliRunner

    from medboost_cli import bench
    from medboost_cli.cli import app

    measured = []
    monkeypatch.setattr(bench, "run_bench", lambda case, *args, **kwargs: measured.append(case) or [case])
    monkeypatch.setattr(bench, "bench_table", lambda rows, label: f"table {rows[0].train.precision}")
    out = CliRunner().invoke(app, ["bench", "breast", "--preset", "cpu", "--booster", "none"])
    assert out.exit_code == 0, out.output
    assert [case.train.precision for case in measured] == ["fp32", "bf16"]
    assert "table fp32" in out.output and "table bf16" in out.output
    measured.clear()
    monkeypatch.setenv(AUTO_PRECISION_ENV, "fp32")  # pinned: one table, as the variable says
    assert CliRunner().invoke(app, ["bench", "breast", "--preset", "cpu"]).exit_code == 0
    assert [case.train.precision for case in measured] == ["auto"]
