"""Device choice, bf16 support and memory readings, for CPU and CUDA alike."""

from __future__ import annotations

import os
import platform
import resource
from contextlib import ExitStack, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .allocator import in_use
from .errors import ConfigError, short


# The device types medboost trains on, each with how to tell it is present here. Others torch names (meta, which
# holds no data; xla, ipu, ...) are refused before a model is built.
DEVICE_TYPES = {
    "cpu": lambda: True,
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: torch.backends.mps.is_available(),
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device={short(name)} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device={short(name)}: medboost trains on {', '.join(DEVICE_TYPES)} devices, not "
                          f"'{device.type}'; use auto, cpu, cuda or cuda:N")
    if not DEVICE_TYPES[device.type]():
        fallback = "cuda or cpu" if torch.cuda.is_available() else "cpu"
        raise ConfigError(f"train.device={short(name)} but no {device.type.upper()} device is available here; use "
                          f"--set train.device={fallback}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={short(name)} but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})


def cpu_bf16_native() -> bool:
    """True where this CPU has bf16 matrix instructions, as torch's own CPU detection (cpuinfo) reports them:
    AVX512-BF16 or AMX on x86; the Armv8.6 BF16 extension elsewhere (what torch's oneDNN bf16 check tests on Arm).

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` on x86: that is also true on AVX512 CPUs without
    AVX512-BF16, where oneDNN converts bf16 to fp32 in software. Without native instructions bf16 is slower than
    fp32 (0.4 GFLOP/s against ~20 for fp32 on a 2-core AVX2 EPYC), so precision ``auto`` must not pick it."""
    if platform.machine().lower() in X86_MACHINES:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``'s ``model name``), else what ``platform`` says of it."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return model


def cpu_summary() -> str:
    """One line on this CPU for logs and test headers: its model, cores, torch's vector capability and the bf16
    instructions that make precision ``auto`` consider bf16."""
    model = cpu_model()
    x86 = platform.machine().lower() in X86_MACHINES
    bf16 = (f"AVX512-BF16 {'yes' if torch.cpu._is_avx512_bf16_supported() else 'no'}, "
            f"AMX {'yes' if torch.cpu._is_amx_tile_supported() else 'no'}") if x86 \
        else f"bf16 {'yes' if cpu_bf16_native() else 'no'}"
    return (f"{model}, {os.cpu_count()} cores, torch capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{bf16}")


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 matrix work runs natively: CUDA compute capability 8.0 (Ampere) and later or ROCm, not the
    emulation torch also offers on older GPUs; a CPU with bf16 instructions (``cpu_bf16_native``)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_bf16_native()
    return False


AUTO_PRECISION_ENV = "MEDBOOST_AUTO_PRECISION"
AUTO_PRECISIONS = ("bf16", "fp32")


def forced_auto_precision() -> str | None:
    """The precision ``$MEDBOOST_AUTO_PRECISION`` gives ``auto`` (bf16 or fp32), None where it is unset or empty."""
    forced = os.environ.get(AUTO_PRECISION_ENV, "").strip().lower()
    if not forced:
        return None
    if forced not in AUTO_PRECISIONS:
        raise ConfigError(f"{AUTO_PRECISION_ENV}={forced!r} is not a precision; set it to "
                          f"{' or '.join(AUTO_PRECISIONS)}, or unset it to let the device decide")
    return forced


def auto_is_bf16(device: torch.device) -> bool:
    """What ``auto`` (``train.precision`` and ``booster.dtype``) resolves to on ``device`` without a measurement:
    bf16 where the device runs it natively (``bf16_supported``), unless ``$MEDBOOST_AUTO_PRECISION`` says bf16 or
    fp32. A run decides with ``precision.decide`` instead, which on a CPU with bf16 instructions also measures
    which precision is faster. The variable makes one machine resolve ``auto`` as another kind would: a test
    suite that sees on an AVX2 CPU what a bf16 CPU sees, or a run repeated in the precision another machine
    chose. An explicit bf16 or fp32 in the recipe is never overridden."""
    forced = forced_auto_precision()
    return bf16_supported(device) if forced is None else forced == "bf16"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for train.precision (auto, bf16, fp32); None means plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16" or auto_is_bf16(device):
        return torch.bfloat16
    return None


def autocast(device: torch.device, amp: torch.dtype | None):
    """torch.autocast to ``amp`` on ``device``, or nothing when ``amp`` is None (plain fp32).

    On a CPU in bf16, attention (``F.scaled_dot_product_attention``, which timm's ViT and the LM blocks call) also
    runs as its math path (matmul, softmax, matmul): torch's fused CPU kernel in bf16 took a third of the CPU
    preset's step on an AVX512-BF16 CPU, and the math path made the whole step 32% faster (docs: performance).
    In fp32 the two measured the same, so fp32 keeps torch's choice."""
    if amp is None:
        return nullcontext()
    stack = ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=amp))
    if device.type == "cpu" and amp == torch.bfloat16:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = in_use()  # on CPU the host allocator is part of the speed (allocator.py)
    return (f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"{name if name.endswith('malloc') else name + ' malloc'})")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_rss_mb() -> float:
    """This process's peak resident set size (MiB). On Linux ``VmHWM``, the high-water mark of the process's own
    address space: ``ru_maxrss`` also counts the address space the process ran in before its ``exec``, so a
    spawned child would report its parent's peak. Elsewhere ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() != "Darwin" else kb / 2**20


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads; None keeps torch's default (the cores, or $OMP_NUM_THREADS when set)."""
    if threads:
        torch.set_num_threads(threads)
