"""Precision ``auto``: bf16 only where the device runs bf16 matrix work natively, decided from torch's own
capability checks (monkeypatched here, so every kind of machine is covered on whichever one runs the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import psutil
import pytest
import torch

from medboost_cli import hardware
from medboost_cli.errors import ConfigError
from medboost_cli.hardware import autocast, autocast_dtype, bf16_supported, peak_rss_mb
from medboost_cli.models import llm_dtype
from medboost_cli.recipes import load_recipe

CPU = torch.device("cpu")


def fake_cpu(monkeypatch, machine: str, avx512_bf16: bool = False, amx: bool = False, mkldnn_bf16: bool = False):
    monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)


@pytest.mark.parametrize("machine, flags, native", [
    # AVX2 only (this project's EPYC): bf16 is emulated, 0.4 GFLOP/s against ~20 in fp32
    ("x86_64", {}, False),
    # AVX512 without AVX512-BF16 (Skylake-X): oneDNN takes bf16 (its check is true) but converts in software
    ("x86_64", {"mkldnn_bf16": True}, False),
    ("x86_64", {"avx512_bf16": True, "mkldnn_bf16": True}, True),  # Cooper Lake, Zen 4
    ("AMD64", {"amx": True}, True),  # Sapphire Rapids (AMX tiles), as Windows names the machine
    ("aarch64", {"mkldnn_bf16": True}, True),  # Armv8.6 BF16 (Graviton 3, Neoverse V1)
    ("arm64", {}, False),  # an Arm CPU without the BF16 extension (Apple M1)
])
def test_auto_is_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch, machine, flags, native):
    monkeypatch.delenv(hardware.AUTO_PRECISION_ENV, raising=False)  # the device decides
    fake_cpu(monkeypatch, machine, **flags)
    assert bf16_supported(CPU) is native
    assert autocast_dtype("auto", CPU) == (torch.bfloat16 if native else None)
    assert autocast_dtype("bf16", CPU) == torch.bfloat16  # asked for, it is used anyway
    assert autocast_dtype("fp32", CPU) is None


@pytest.mark.parametrize("native", [False, True])
def test_the_environment_says_what_auto_resolves_to_on_any_cpu(monkeypatch, native):
    """$MEDBOOST_AUTO_PRECISION makes ``auto`` (autocast and F_L's storage) bf16 or fp32 whatever the CPU has, so a
    test suite sees on one kind of CPU what another sees; a precision the recipe names is never overridden."""
    fake_cpu(monkeypatch, "x86_64", avx512_bf16=native)
    recipe = load_recipe("breast", preset="cpu")
    assert recipe.train.precision == "auto" and recipe.booster.dtype == "auto"
    for forced, dtype in (("bf16", torch.bfloat16), ("fp32", None), (" BF16 ", torch.bfloat16)):
        monkeypatch.setenv(hardware.AUTO_PRECISION_ENV, forced)
        assert autocast_dtype("auto", CPU) == dtype
        assert llm_dtype(recipe, CPU) == (dtype or torch.float32)
        assert autocast_dtype("bf16", CPU) == torch.bfloat16 and autocast_dtype("fp32", CPU) is None
    monkeypatch.setenv(hardware.AUTO_PRECISION_ENV, "")
    assert autocast_dtype("auto", CPU) == (torch.bfloat16 if native else None)  # empty: the device decides
    monkeypatch.setenv(hardware.AUTO_PRECISION_ENV, "fp16")
    with pytest.raises(ConfigError, match="MEDBOOST_AUTO_PRECISION='fp16' is not a precision; set it to bf16 or fp32"):
        autocast_dtype("auto", CPU)


@pytest.mark.parametrize("machine, flags, shown", [
    ("x86_64", {}, "AVX512-BF16 no, AMX no"),
    ("x86_64", {"avx512_bf16": True}, "AVX512-BF16 yes, AMX no"),
    ("x86_64", {"avx512_bf16": True, "amx": True}, "AVX512-BF16 yes, AMX yes"),
    ("aarch64", {"mkldnn_bf16": True}, "bf16 yes"),
])
def test_the_cpu_line_names_the_instructions_that_decide_auto(monkeypatch, machine, flags, shown):
    fake_cpu(monkeypatch, machine, **flags)
    line = hardware.cpu_summary()
    assert line.endswith(shown) and f"{os.cpu_count()} cores" in line
    assert f"torch capability {torch.backends.cpu.get_cpu_capability()}" in line


@pytest.mark.parametrize("capability_8, native", [(True, True), (False, False)])
def test_auto_on_cuda_needs_native_bf16_not_emulation(monkeypatch, capability_8, native):
    """torch.cuda.is_bf16_supported() is true by default on pre-Ampere GPUs too, which emulate bf16; precision
    auto asks without emulation, on the device it will run on."""
    monkeypatch.delenv(hardware.AUTO_PRECISION_ENV, raising=False)  # the device decides
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return capability_8 or including_emulation

    selected = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: selected.append(device) or nullcontext())
    gpu = torch.device("cuda:1")
    assert autocast_dtype("auto", gpu) == (torch.bfloat16 if native else None)
    assert asked == [False] and selected == [gpu]


def test_peak_rss_is_this_processs_high_water_mark():
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page, so that it is resident
    rss = psutil.Process().memory_info().rss / 2**20  # read first: the peak read after it cannot be lower
    assert peak_rss_mb() >= rss >= 64
    del block


def test_a_child_process_does_not_report_its_parents_peak():
    """ru_maxrss of a process started by fork/vfork + exec also counts the parent's address space it ran in before
    the exec (its peak); a bench worker's figure must be its own."""
    block = bytearray(400 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    code = "from medboost_cli.hardware import peak_rss_mb; print(peak_rss_mb())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(Path(hardware.__file__).parents[1])})
    parent = peak_rss_mb()
    del block
    assert float(child.stdout.split()[-1]) < parent - 300, (child.stdout, parent)


def _attention_kernels(amp):
    """The SDPA kernels one attention call runs, under ``autocast`` to ``amp`` on the CPU."""
    q = torch.randn(2, 3, 50, 16, generator=torch.Generator().manual_seed(0))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with autocast(torch.device("cpu"), amp):
            out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    return {e.name for e in prof.events() if "attention" in e.name}, out


def test_bf16_attention_on_the_cpu_runs_as_the_math_path_and_fp32_keeps_torchs_kernel():
    fused, reference = _attention_kernels(None)
    assert any("flash" in name for name in fused), fused  # torch's own choice on the CPU
    math, out = _attention_kernels(torch.bfloat16)
    assert math and not any("flash" in name for name in math), math
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), reference, atol=3e-2)
