"""What precision ``auto`` (``train.precision``, and ``booster.dtype`` for a frozen LM) resolves to for a run: bf16
or fp32, decided once for every ``auto`` key of the run together (``decide``), in this order:

1. ``$MEDBOOST_AUTO_PRECISION`` (bf16 or fp32) says which, without measuring (the test suite pins it).
2. A device without native bf16 matrix work (``hardware.bf16_supported``) trains in fp32, without measuring: on an
   AVX2-only CPU bf16 is emulated and far slower.
3. A GPU with native bf16 trains in bf16.
4. A CPU with bf16 instructions (AVX512-BF16, AMX, Arm's BF16) trains in bf16 only where a measurement says it is
   faster for this run: a few training steps of the run's own model at its batch shape (``step_seconds``: the
   training loop's own step, eager), in fp32 and in bf16, and bf16 only when its median step is at least
   ``MARGIN`` faster. The decision and both timings are kept in a small JSON file (``cache_path``), keyed by the
   CPU model, torch's version, the thread count and the run's shape (``shape_key``), so a study measures each
   shape once.

A precision the recipe names is never overridden. The run prints the measured decision in one line
(``Decision.line``) and keeps it in its row (``run_cost_json["precision"]``, ``record``); scoring a saved run again
takes the precision the run trained in (``as_recorded``)."""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .bench_step import StepBench
from .errors import short
from .fileio import write_text
from .hardware import AUTO_PRECISION_ENV, bf16_supported, cpu_model, forced_auto_precision, resolve_device

if TYPE_CHECKING:
    from .recipes import Recipe

MARGIN = 0.10  # bf16 is chosen where its step takes at most 90% of fp32's
WARMUP, STEPS = 1, 3  # untimed steps, then timed ones (their median), per precision
CACHE_ENV = "MEDBOOST_PRECISION_CACHE"  # the cache file's path, where set
CACHE_FORMAT = 1

# How a decision was made (``Decision.how``), in words for the row and the log.
HOW = {
    "forced": f"set by ${AUTO_PRECISION_ENV}",
    "unsupported": "no native bf16 matrix work on this device",
    "device": "native bf16 on this GPU",
    "measured": "measured",
    "cached": "measured earlier",
}


@dataclass(frozen=True)
class Decision:
    """What ``auto`` resolved to (``bf16``) and how (``HOW``); measured ones with the median step of each precision,
    the CPU and thread count they were measured on, when, and the cache file that keeps them."""

    bf16: bool
    how: str
    fp32_ms: float | None = None
    bf16_ms: float | None = None
    cpu: str | None = None
    threads: int | None = None
    measured_at: str | None = None
    cache: str | None = None

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def line(self) -> str | None:
        """One line on a measured decision (None for the others, which the device or the environment decides)."""
        if self.fp32_ms is None or self.bf16_ms is None:
            return None
        mine, theirs = (self.bf16_ms, self.fp32_ms) if self.bf16 else (self.fp32_ms, self.bf16_ms)
        other = "fp32" if self.bf16 else "bf16"
        kept = ("not cached" if self.cache is None else f"cached in {self.cache}" if self.how == "measured"
                else f"from the cache {self.cache}")
        return (f"precision auto → {self.name}: {_ms(mine)} ms vs {_ms(theirs)} ms per step ({other}), measured on "
                f"{self.cpu}, {self.threads} threads; {kept}")

    def record(self) -> dict[str, Any]:
        """The decision as the row keeps it: ``auto`` (bf16 or fp32), ``how`` in words and the measured figures."""
        fields = {k: v for k, v in asdict(self).items() if v is not None and k not in ("bf16", "how")}
        return {"auto": self.name, "how": HOW[self.how], **fields}


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


# ------------------------------------------------------------------------------------------------- the recipe


def auto_keys(recipe: Recipe) -> list[str]:
    """The keys of ``recipe`` that say ``auto`` and matter: ``train.precision``; ``booster.dtype`` where the run
    loads a frozen LM."""
    keys = ["train.precision"] if recipe.train.precision == "auto" else []
    b = recipe.booster
    if b.dtype == "auto" and b.freeze and recipe.family.loads_lm(recipe):
        keys.append("booster.dtype")
    return keys


def candidate(recipe: Recipe, bf16: bool) -> Recipe:
    """``recipe`` with each of its ``auto`` precision keys set to bf16 (or fp32); the keys it names stay."""
    value = "bf16" if bf16 else "fp32"
    train, booster = recipe.train, recipe.booster
    if train.precision == "auto":
        train = train.model_copy(update={"precision": value})
    if booster.dtype == "auto":
        booster = booster.model_copy(update={"dtype": value})
    return recipe.model_copy(update={"train": train, "booster": booster})


def resolved(recipe: Recipe, decision: Decision | None) -> Recipe:
    """``recipe`` as the run builds and trains it: ``auto`` replaced by the decision (the run's id and row keep
    the recipe as written)."""
    return recipe if decision is None else candidate(recipe, decision.bf16)


def as_recorded(recipe: Recipe, row: dict[str, Any]) -> Recipe:
    """``recipe`` of a saved run with ``auto`` as the run resolved it: its recorded decision
    (``run_cost_json["precision"]``), else its ``precision`` column where ``train.precision`` is ``auto``; a row
    with neither leaves ``auto`` to the device's rule (``hardware.auto_is_bf16``)."""
    try:
        recorded = (json.loads(row.get("run_cost_json") or "{}").get("precision") or {}).get("auto")
    except (ValueError, AttributeError):
        recorded = None
    if recorded is None and recipe.train.precision == "auto" and row.get("precision"):
        recorded = "bf16" if row["precision"] in ("bf16", "bfloat16") else "fp32"
    return recipe if recorded not in ("bf16", "fp32") else candidate(recipe, recorded == "bf16")


def shape_key(recipe: Recipe) -> dict[str, Any]:
    """What a measurement holds for: the machine (CPU model, torch, threads) and the run's shape (the model and
    its LM, the precision keys, batch, image size and dimensions). Not the learning rate, epochs or seed."""
    t, b, task, family = recipe.train, recipe.booster, recipe.task_info, recipe.family
    return {
        "cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": family.name, "backbone": recipe.backbone.model_dump(mode="json"), "booster": recipe.arm,
        "llm": b.llm if family.loads_lm(recipe) else None, "layer": b.layer, "freeze": b.freeze,
        "section": getattr(recipe, family.name).model_dump(mode="json") if family.section else None,
        "precision": t.precision, "dtype": b.dtype, "batch": t.batch_size, "micro_batch": t.micro_batch,
        "size": recipe.data.size, "dims": task.dims, "channels": task.n_channels, "channels_last": t.channels_last,
    }


# ------------------------------------------------------------------------------------------------- measuring


def step_seconds(recipe: Recipe) -> float:
    """The median seconds of ``recipe``'s training step (its precision keys named) on its CPU, after ``WARMUP``
    untimed steps: the training loop's step (``steps.train_step``: augmentation, autocast, backward, clipping,
    AdamW) on a synthetic uint8 batch of the run's shape, on a model of its own, built as the run builds its
    model (bench_step.StepBench). The global RNG is left as it was, so the run that follows draws what it would
    have drawn."""
    with torch.random.fork_rng(devices=[]):
        bench = StepBench.of(recipe)
        times = []
        for _ in range(WARMUP + STEPS):
            start = time.perf_counter()
            bench.step()
            times.append(time.perf_counter() - start)
    del bench
    gc.collect()
    return statistics.median(times[WARMUP:])


def measure_both(recipe: Recipe, device: torch.device,
                 step: Callable[[Recipe], float] | None = None) -> tuple[float, float]:
    """Seconds per training step of ``recipe`` in fp32 and in bf16 on ``device``, without torch.compile, each
    timed by ``step`` (``step_seconds`` by default)."""
    step = step or step_seconds
    where = {"device": str(device), "compile": False}
    fp32, bf16 = (candidate(recipe, bf16) for bf16 in (False, True))
    return (step(fp32.model_copy(update={"train": fp32.train.model_copy(update=where)})),
            step(bf16.model_copy(update={"train": bf16.train.model_copy(update=where)})))


# ------------------------------------------------------------------------------------------------- the cache


def cache_path() -> Path:
    """``$MEDBOOST_PRECISION_CACHE``, else ``precision.json`` in ``$XDG_CACHE_HOME/medboost`` (``~/.cache``)."""
    named = os.environ.get(CACHE_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medboost" / "precision.json"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _valid(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("key"), dict) and \
        all(isinstance(entry.get(k), (int, float)) for k in ("fp32_ms", "bf16_ms"))


def read_cache(path: Path, warn: bool = True) -> list[dict[str, Any]]:
    """The cache's entries; none for a missing file, and none with one warning (``warn``) for a file that is not
    the cache (it is rewritten when the next decision is kept)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list) or data.get("format") != CACHE_FORMAT or not all(map(_valid, entries)):
            raise ValueError(f"not a format-{CACHE_FORMAT} precision cache")
        return entries
    except (FileNotFoundError, NotADirectoryError):  # no cache yet
        return []
    except (OSError, ValueError) as e:
        if warn:
            _warn(f"{path}: {short(str(e))}; ignoring it, measuring again and rewriting it")
        return []


def keep(path: Path, entry: dict[str, Any]) -> bool:
    """Add ``entry`` to the cache (in place of one with its key); False, with one warning, where it cannot be
    written (the run goes on with its decision)."""
    entries = [e for e in read_cache(path, warn=False) if e["key"] != entry["key"]] + [entry]
    try:
        write_text(path, json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1) + "\n")
    except OSError as e:
        _warn(f"could not write the precision cache {path} ({short(str(e))}); set ${CACHE_ENV} to a writable file")
        return False
    return True


# ------------------------------------------------------------------------------------------------- deciding


def _without_measuring(device: torch.device) -> Decision | None:
    """The decision where the environment or the device makes it; None where it takes a measurement."""
    forced = forced_auto_precision()
    if forced is not None:
        return Decision(forced == "bf16", "forced")
    if not bf16_supported(device):
        return Decision(False, "unsupported")
    return None if device.type == "cpu" else Decision(True, "device")


def _measured(recipe: Recipe, device: torch.device, step: Callable[[Recipe], float] | None, path: Path) -> Decision:
    """The cached decision for the run's shape, else a new measurement, kept in the cache."""
    key = shape_key(recipe)
    found = next((e for e in read_cache(path) if e["key"] == key), None)
    how = "cached"
    if found is None:
        fp32, bf16 = measure_both(recipe, device, step)
        found = {"key": key, "fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3,
                 "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        how = "measured"
    kept = how == "cached" or keep(path, found)
    return Decision(found["bf16_ms"] <= (1 - MARGIN) * found["fp32_ms"], how, found["fp32_ms"], found["bf16_ms"],
                    key["cpu"], key["threads"], found.get("measured_at"), str(path) if kept else None)


def decide(recipe: Recipe, device: torch.device, *, step: Callable[[Recipe], float] | None = None,
           main: bool = True, share: Callable[[Any], list[Any]] | None = None) -> Decision | None:
    """What ``auto`` resolves to for the run of ``recipe`` on ``device`` (module docstring); None where no key of
    the recipe says ``auto``. ``step``: seconds per training step of a recipe (``step_seconds``). With several
    processes, the main one (``main``) measures and ``share`` (an all-gather) hands its decision to the others."""
    if not auto_keys(recipe):
        return None
    quick = _without_measuring(device)
    if quick is not None:
        return quick
    decision = _measured(recipe, device, step, cache_path()) if main else None
    return share(decision)[0] if share is not None else decision


def record(decision: Decision | None) -> dict[str, Any]:
    """The run's ``run_cost_json`` entries for ``decision``: ``{"precision": ...}``, nothing without one."""
    return {} if decision is None else {"precision": decision.record()}


def announce(decision: Decision | None, log: Callable[[str], Any]) -> None:
    """Log the measured decision's line (``Decision.line``); the others are said only in the row."""
    line = decision.line() if decision is not None else None
    if line:
        log(line)


def bench_candidates(recipe: Recipe) -> list[Recipe]:
    """The recipes `medboost bench` measures for ``recipe``: where a run would measure to resolve ``auto`` (a CPU
    with bf16 instructions, no precision forced), both, fp32 then bf16; else the recipe itself."""
    if not auto_keys(recipe) or _without_measuring(resolve_device(recipe.train.device)) is not None:
        return [recipe]
    return [candidate(recipe, False), candidate(recipe, True)]
