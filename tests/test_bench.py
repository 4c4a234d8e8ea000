"""`medboost bench`: FLOP counting, per-step timings, one worker process per mode and its errors, the rows and their
Parquet records."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medboost_cli import allocator, bench, bench_timing
from medboost_cli.bench import bench_recipe, run_bench
from medboost_cli.bench_timing import count_flops
from medboost_cli.errors import DataError, MedboostError

from .conftest import TINY_SETS
from .test_cli import Result, assert_one_line_error, run

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # benchmark code, imported by name there
from bench_rows import load_bench  # noqa: E402


def test_flops_of_a_matmul_and_of_cpu_attention():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    q = torch.randn(1, 2, 10, 8)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 2 * 2 * 2 * 10 * 10 * 8


def test_matmul_rate_is_flops_over_the_best_trial(monkeypatch):
    """2 m k n FLOPs over the fastest of the trials' timings (timings stubbed: the real 2048x4096x4096 bf16
    products take minutes on a CPU without bf16 matrix units, and a rate is not something to assert)."""
    seconds = iter([0.5, 0.25, 1.0])
    monkeypatch.setattr(bench_timing, "seconds_per_call", lambda fn, steps: next(seconds))
    assert bench_timing.matmul_tflops(torch.device("cpu"), trials=3) == 2 * 2048 * 4096 * 4096 / 0.25 / 1e12


def test_seconds_per_call_is_torch_timers_mean_after_two_untimed_calls():
    calls = []
    assert bench_timing.seconds_per_call(lambda: calls.append(1), steps=5) > 0
    assert len(calls) == 2 + 5


def test_measure_times_each_step_and_gives_median_and_iqr(monkeypatch):
    """Warm-up calls untimed, then one timing per call; median and IQR are numpy's linear-interpolated percentiles
    of those timings (a fake clock that each call advances by a known duration)."""
    durations = [9.0, 9.0, 0.1, 0.4, 0.2, 0.8, 0.3]  # two warm-up calls, then five timed
    clock, calls = [0.0], []

    def step():
        clock[0] += durations[len(calls)]
        calls.append(1)

    monkeypatch.setattr(bench_timing.benchmark, "timer", lambda: clock[0])
    m = bench_timing.measure(step, warmup=2, steps=5, label="step")
    timed = durations[2:]
    assert len(calls) == 7 and m.times == pytest.approx(timed)
    assert m.median == pytest.approx(np.percentile(timed, 50))
    assert m.iqr == pytest.approx(np.percentile(timed, 75) - np.percentile(timed, 25))
    fields = bench_timing.ms_fields(m, "train")
    assert fields == {"train_ms_median": pytest.approx(300.0), "train_ms_iqr": pytest.approx(200.0), "train_ms_n": 5,
                      "train_ms_samples": pytest.approx([100.0, 400.0, 200.0, 800.0, 300.0])}


def test_bench_measures_each_mode_in_its_own_process_and_writes_rows(tmp_path, monkeypatch):
    # the reference rate (measured above), before the cases and after them: the rows are held to the better one
    references = iter([1.6, 2.0])
    monkeypatch.setattr(bench, "matmul_tflops", lambda device, dtype, shape=None: next(references))
    sets = [s for s in TINY_SETS if not s.startswith("train.batch_size")]
    recipe = bench_recipe("breast", None, "minilm", 4, sets, preset="cpu")
    rows = run_bench(recipe, ["none", "rllm"], warmup=1, steps=3, results_dir=tmp_path, label="breast",
                     log=lambda *a: None)
    none, rllm = rows
    assert (none["booster"], rllm["booster"]) == ("none", "rllm")
    # each mode in a fresh process of its own: not this one, not the other mode's
    assert len({none["worker_pid"], rllm["worker_pid"], os.getpid()}) == 3
    for r in rows:
        assert r["matmul_tflops"] == 2.0 and r["train_ms_n"] == r["eval_ms_n"] == 3
        assert (r["matmul_tflops_before"], r["matmul_tflops_after"]) == (1.6, 2.0)
        for name in ("train", "eval"):  # median and IQR of the per-step timings the row keeps
            samples = r[f"{name}_ms_samples"]
            assert len(samples) == 3 and min(samples) > 0
            assert r[f"{name}_ms_median"] == pytest.approx(np.percentile(samples, 50))
            assert r[f"{name}_ms_iqr"] == pytest.approx(np.percentile(samples, 75) - np.percentile(samples, 25))
        assert r["train_images_per_second"] == pytest.approx(4 / (r["train_ms_median"] / 1e3))
        assert r["eval_images_per_second"] == pytest.approx(4 / (r["eval_ms_median"] / 1e3))
        assert r["step_fraction_of_matmul"] == pytest.approx(r["step_tflops"] / 2.0)
        assert r["batch"] == 4 and r["input_size"] == 28 and r["tokens"] == 50
        assert r["matmul_dtype"] == r["precision"]  # the reference is measured in the precision the model runs in
        # the worker's own memory: torch loaded before the model, its peak after; no CUDA figure on a CPU
        assert 0 < r["worker_rss_before_model_mb"] <= r["worker_peak_rss_mb"]
        assert r["peak_cuda_allocated_mb"] is None
        # the worker's host allocator, which it inherits from this process (LD_PRELOAD) and names in its device
        assert r["allocator"] == allocator.in_use() and f"{r['threads']} threads, " in r["device"]
        assert r["device"].endswith((f"{r['allocator']})", f"{r['allocator']} malloc)"))
    assert none["layer_tflops"] is None and rllm["layer_tflops"] > 0
    assert rllm["layer_fraction_of_matmul"] == pytest.approx(rllm["layer_tflops"] / 2.0)
    # the booster adds the frozen layer's parameters but few trainable ones, and its FLOPs
    assert rllm["params_total"] - none["params_total"] > 1.7e6
    assert rllm["params_trainable"] - none["params_trainable"] == 2 * 32 * 384
    assert rllm["gmacs_per_image"] > none["gmacs_per_image"]
    df = load_bench(tmp_path).set_index("booster")
    assert sorted(df.index) == ["none", "rllm"]
    for r in rows:  # the Parquet records hold the returned rows
        stored = df.loc[r["booster"]]
        assert (stored.bench_id, stored.params_total, stored.train_ms_median, list(stored.train_ms_samples)) == (
            r["bench_id"], r["params_total"], r["train_ms_median"], r["train_ms_samples"])
        # written again at the end with the better reference (first written with the one measured before)
        assert (stored.matmul_tflops, stored.step_fraction_of_matmul) == (2.0, r["step_fraction_of_matmul"])


def test_an_error_in_a_worker_comes_back_as_one_line_with_its_exit_code(tmp_path, capfd, monkeypatch):
    """A model-file problem found in the worker (an LM folder without config.json) ends `medboost bench` with the
    worker's error class, message and exit code (4), on one line; nothing else is printed, by either process."""
    monkeypatch.setattr(bench, "matmul_tflops", lambda device, dtype, shape=None: 2.0)
    empty = tmp_path / "no-lm"
    empty.mkdir()
    result = run("bench", "breast", "--preset", "cpu", "--booster", "rllm", "--llm", empty, "--batch", "4",
                 "--warmup", "0", "--steps", "1", *[a for s in TINY_SETS for a in ("--set", s)],
                 "--results-dir", tmp_path / "results")
    progress = ("fp32 matmul rate", "bf16 matmul rate", "measuring breast booster=rllm", "note: on glibc")
    errors = Result(result.returncode, result.stdout,
                    "\n".join(line for line in result.stderr.splitlines() if not line.startswith(progress)))
    assert_one_line_error(errors, "model file error: booster=rllm:", str(empty), "neither config.json", code=4)
    assert capfd.readouterr().err.strip() == ""  # the worker printed nothing of its own (no traceback)
    assert not (tmp_path / "results" / "bench").exists()  # no row for a mode that failed


def test_worker_sends_its_error_and_the_parent_raises_it(monkeypatch):
    """The worker's side in this process: a MedboostError goes back as its class and message and ends the worker
    with its exit code; any other exception as an internal error with the worker's traceback, exit code 1."""
    case = bench_recipe("breast", None, "minilm", 4, ["data.verify=false"], preset="cpu")
    previous = signal.getsignal(signal.SIGINT)  # the worker leaves Ctrl-C to its parent
    try:
        for raised, code in [(DataError("breast.npz: truncated"), 3), (ValueError("boom\nsecond line"), 1)]:
            def fail(*args, raised=raised):
                raise raised

            monkeypatch.setattr(bench, "bench_mode", fail)
            receive, send = multiprocessing.Pipe(duplex=False)
            with pytest.raises(SystemExit) as exit_:
                bench._worker(send, case.model_dump_json(), 1, 1, 2.0)
            assert exit_.value.code == code
            error = bench._worker_failure(json.loads(receive.recv_bytes()), "booster=rllm", code)
            if code == 3:
                assert type(error) is DataError and str(error) == "booster=rllm: breast.npz: truncated"
            else:
                assert isinstance(error, bench.BenchWorkerError)
                first, rest = str(error).split("\n", 1)
                assert first == "ValueError in the bench worker for booster=rllm: boom"
                assert "Traceback" in rest and "ValueError: boom" in rest
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_worker_that_dies_without_a_row_is_reported():
    killed = bench._worker_failure(None, "booster=rllm", -signal.SIGKILL)
    assert isinstance(killed, bench.BenchWorkerError)
    assert str(killed) == ("the bench worker for booster=rllm was ended by SIGKILL before it sent a row "
                           "(out of memory? try a smaller --batch)")
    assert str(bench._worker_failure(None, "booster=none", 7)) == (
        "the bench worker for booster=none ended with exit code 7 before it sent a row")


def test_bench_arguments_are_checked():
    with pytest.raises(MedboostError, match="give a TASK or --shape"):
        bench_recipe(None, None, None, 8, [])
    with pytest.raises(MedboostError, match="--shape 5d: choose one of 2d-224, 3d-28"):
        bench_recipe(None, "5d", None, 8, [])
    r = bench_recipe(None, "2d-224", None, 8, [])
    assert (r.backbone.name, r.backbone.pretrained, r.booster.llm, r.train.batch_size) == (
        "vit-s", False, "random:llama-7b", 8)


def test_pneumollm_is_benched_by_variant_and_its_frozen_path_is_the_lm_stack(tmp_path, monkeypatch):
    """`medboost bench --model pneumollm`: the whole model against the model without its LM, each in its own
    process; the frozen path measured is the stack of LM layers at the d + m tokens it sees (6 source + 4
    diagnosis tokens on the CPU preset), and the two variants differ by exactly the LM's parameters and adapters."""
    monkeypatch.setattr(bench, "matmul_tflops", lambda device, dtype, shape=None: 2.0)
    sets = [s for s in TINY_SETS if not s.startswith(("train.batch_size", "backbone.depth"))]
    recipe = bench_recipe("breast", None, "minilm", 4, sets + ["pneumollm.llm_layers=2"], preset="cpu",
                          model="pneumollm")
    assert bench.bench_names(recipe, [], []) == ["pneumollm", "no-llm"]
    rows = run_bench(recipe, ["pneumollm", "no-llm"], warmup=1, steps=2, results_dir=tmp_path, label="breast",
                     log=lambda *a: None)
    full, bare = rows
    assert (full["booster"], bare["booster"]) == ("pneumollm", "no-llm")
    assert full["model"] == bare["model"] == "pneumollm"
    assert (full["llm"], bare["llm"]) == ("minilm", None)
    assert full["tokens"] == 6 + 4 and full["layer_tflops"] > 0 and full["layer_ms_median"] > 0
    assert full["layer_fraction_of_matmul"] == pytest.approx(full["layer_tflops"] / 2.0)
    assert bare["layer_tflops"] is None and bare["layer_ms_median"] is None
    # two MiniLM layers (frozen) and their two adapters of width 8 in 2 groups (trainable) are the difference
    lm_layer = 4 * (384 * 384 + 384) + 2 * 384 + 384 * 1536 + 1536 + 1536 * 384 + 384 + 2 * 384
    adapter = 384 * 8 + 8 + (8 // 2) * (384 // 2) * 2 + 384
    assert full["params_total"] - bare["params_total"] == 2 * (lm_layer + adapter)
    assert full["params_trainable"] - bare["params_trainable"] == 2 * adapter
    assert full["gmacs_per_image"] > bare["gmacs_per_image"]
    assert sorted(load_bench(tmp_path).booster) == ["no-llm", "pneumollm"]
    table = bench.bench_table(rows, "breast")
    assert [c.header for c in table.columns][0] == "variant" and "LM stack % of floor" in [c.header for c in table.columns]


def test_bench_cases_are_booster_modes_for_rllm_and_variants_for_pneumollm():
    rllm = bench_recipe("breast", None, "minilm", 4, ["data.verify=false"], preset="cpu")
    pneumo = bench_recipe("breast", None, "minilm", 4, ["data.verify=false"], preset="cpu", model="pneumollm")
    assert bench.bench_names(rllm, [], []) == ["none", "rllm"]
    assert bench.bench_names(rllm, ["mlp"], []) == ["mlp"]
    assert bench.bench_names(pneumo, [], ["simplified"]) == ["simplified"]
    with pytest.raises(MedboostError, match="--variant is for --model pneumollm"):
        bench.bench_names(rllm, [], ["no-llm"])
    with pytest.raises(MedboostError, match="with --model pneumollm compare --variant pneumollm / no-llm / simplified"):
        bench.bench_names(pneumo, ["rllm"], [])
    with pytest.raises(MedboostError, match="'rllm' is not one of pneumollm, no-llm, simplified"):
        bench.bench_cases(pneumo, ["rllm"])
    (_, simplified), = bench.bench_cases(pneumo, ["simplified"])
    assert (simplified.pneumollm.engine, simplified.pneumollm.emitter, simplified.pneumollm.llm) == (False, False, True)
    (_, mlp), = bench.bench_cases(rllm, ["mlp"])
    assert mlp.booster.mode == "mlp" and mlp.model == "rllm"


def test_pneumollm_at_the_paper_shape():
    """--shape 2d-224 --model pneumollm: a randomly initialised CLIP ViT-L/14 at 224 and every layer of a
    LLaMA-7B-shaped LM, batch 16 (the paper's)."""
    r = bench_recipe(None, "2d-224", None, None, [], model="pneumollm")
    assert (r.model, r.backbone.name, r.backbone.pretrained, r.booster.llm, r.data.size) == (
        "pneumollm", "clip-l14", False, "random:llama-7b", 224)
    assert (r.train.batch_size, r.pneumollm.llm_layers, r.pneumollm.source_every, r.pneumollm.tokens) == (16, None, 4, 4)


def test_booster_modes_with_pneumollm_are_one_line_config_errors(tmp_path):
    result = run("bench", "breast", "--model", "pneumollm", "--booster", "rllm", "--preset", "cpu",
                 "--results-dir", tmp_path)
    assert_one_line_error(result, "config error:", "--booster compares R-LLM booster modes", "--variant", code=2)
    assert not tmp_path.joinpath("bench").exists()


def test_a_cpu_bench_on_glibc_says_once_what_a_caching_allocator_gains_and_how():
    hint = bench.allocator_hint("glibc", installed=False)
    assert "pip install cmeel-mimalloc, then --allocator auto" in hint and "\n" not in hint
    assert "3-25% faster: --allocator auto (or MEDBOOST_ALLOCATOR=auto)" in bench.allocator_hint("glibc", installed=True)
    # nothing to say when the process is on a caching allocator, or off glibc
    assert bench.allocator_hint("tcmalloc", installed=False) is None
    assert bench.allocator_hint("mimalloc", installed=False) is None
    assert bench.allocator_hint("system", installed=False) is None
