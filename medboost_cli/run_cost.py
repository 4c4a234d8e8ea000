"""What a whole run costs against the machine: its FLOPs over its wall time at the matmul rate of the same process.

The run-level efficiency of a run is the FLOPs of every training step and every evaluation forward it took, over
(the wall time from the start of the process to the written row) x (the matmul rate measured in that process, in
the precision the model runs in). Where ``medboost bench`` holds one step to its floor, this holds the whole run:
start-up and imports, data loading, building the model, evaluation, checkpoints and the row included.

* **FLOPs** are counted by ``torch.utils.flop_counter`` on the run's own first step of each batch shape (the last
  batch of an epoch may be short) and its first pass over each evaluated split; later steps and passes of the same
  shape add the same count. Counting runs the ops as they are, so the run's numbers do not change (with
  ``train.compile`` the counted calls run eagerly, and the compiled graphs serve the others).
* **Wall time** is split into ``PARTS``. The start-up is the time from the process's creation (the operating
  system's record of it, ``psutil``) to the start of building the run (``engine.Run.build``); a second run in the
  same process (a study run in process) starts there instead. The final row's write is taken to last as long as
  the first (the "running" row's), as the figure is stored in that row. ``other`` is what no part names.
* **The reference** is a matmul timed for at most ``REFERENCE_SECONDS`` (2% of a short run) after training
  (``bench_timing.matmul_tflops_within``); its own time is left out of the wall time.

With several processes each holds its own figures; the row holds rank 0's.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, TypeVar

import psutil
import torch

# bench_timing is imported where it is used: it imports torch.utils.benchmark, which asks CUDA for its devices,
# and engine (which a launcher's forkserver imports before forking runs that may use a GPU) imports this module

T = TypeVar("T")

PARTS = ("startup", "data", "model", "train", "eval", "checkpoints", "row")
LABELS = {"startup": "start-up and imports", "data": "data loading", "model": "model build", "train": "training steps",
          "eval": "evaluation", "checkpoints": "checkpoints", "row": "writing the row", "other": "other"}
REFERENCE_SECONDS = 0.5  # the longest the reference matmul is timed
REFERENCE_SHARE = 0.02  # and at most this share of a shorter run's wall time (at least MIN_REFERENCE_SECONDS)
MIN_REFERENCE_SECONDS = 0.05
COLUMNS = ("run_flops", "run_fraction_of_matmul", "run_cost_json")  # the row's columns this module fills

_process_counted = False  # whether a run in this process has counted the process's start-up as its own


def process_start() -> float:
    """When this process was created (seconds since the epoch), as the operating system recorded it."""
    return psutil.Process().create_time()


def _counted(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the FLOPs it ran. A compiled model (``train.compile``) runs this call eagerly: torch.compile
    does not trace under the counter's dispatch mode, and would otherwise never compile the frames it skipped."""
    from .bench_timing import count_flops

    out: list[T] = []
    stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    with stance("force_eager") if stance else nullcontext(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*global hooks on modules.*")  # the counter's module tracker
        flops = count_flops(lambda: out.append(fn()))
    return out[0], flops


class RunCost:
    """A run's wall time by part and its counted FLOPs, from the start of its process (or of ``train``)."""

    def __init__(self, began: float | None = None) -> None:
        global _process_counted
        now = time.time()
        if began is None:
            began = now if _process_counted else min(now, process_start())
        _process_counted = True
        self.began = began
        self._clock = time.perf_counter() - (now - began)  # perf_counter's reading at ``began``
        self.seconds = dict.fromkeys(PARTS, 0.0) | {"startup": now - began}
        self.flops = {"train": 0, "eval": 0}
        self.counts = {"train_steps": 0, "eval_passes": 0}
        self._shapes: dict[tuple[str, Any], int] = {}  # the FLOPs counted once per (train, batch) / (eval, split)
        self.extra: dict[str, Any] = {}  # other figures of the run for its row: how precision auto was resolved

    def elapsed(self) -> float:
        return time.perf_counter() - self._clock

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the time of the block to part ``name`` (one of ``PARTS``)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def _add(self, kind: str, key: Any, fn: Callable[[], T]) -> T:
        known = self._shapes.get((kind, key))
        if known is None:
            result, self._shapes[kind, key] = _counted(fn)
        else:
            result = fn()
        self.flops[kind] += self._shapes[kind, key]
        return result

    def train_step(self, batch: int, step: Callable[[], T]) -> T:
        """``step()``, one training step on ``batch`` samples, with its FLOPs added (counted on its first call)."""
        self.counts["train_steps"] += 1
        return self._add("train", batch, step)

    def evaluation(self, split: str, score: Callable[[], T]) -> T:
        """``score()``, one pass over ``split``, timed as evaluation and with its FLOPs added."""
        self.counts["eval_passes"] += 1
        with self.part("eval"):
            return self._add("eval", split, score)

    def figures(self, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """The run's figures now: wall time (with the final row's write), its parts, FLOPs, the reference matmul
        rate measured here and the run's fraction of it."""
        from .bench_timing import dtype_name, matmul_tflops_within

        wall = self.elapsed() + self.seconds["row"]  # the final row's write, as long as the first row's
        budget = min(REFERENCE_SECONDS, max(MIN_REFERENCE_SECONDS, REFERENCE_SHARE * wall))
        start = time.perf_counter()
        try:
            rate = matmul_tflops_within(device, dtype, budget)
        except RuntimeError:  # out of memory after a failed run, say: the row is written without a figure
            rate = 0.0
        reference_seconds = time.perf_counter() - start
        self._clock += reference_seconds  # the reference's own time is not the run's
        seconds = self.seconds | {"row": 2 * self.seconds["row"]}
        seconds["other"] = max(0.0, wall - sum(seconds.values()))
        flops = self.flops["train"] + self.flops["eval"]
        return {"wall_seconds": wall, "seconds": seconds, "flops": dict(self.flops), **self.counts,
                "total_flops": flops, "matmul_tflops": rate, "matmul_dtype": dtype_name(dtype),
                "reference_seconds": reference_seconds,
                "fraction_of_matmul": flops / (wall * rate * 1e12) if wall > 0 and rate > 0 else None, **self.extra}

    def close(self, row: dict[str, Any], device: torch.device, amp: torch.dtype | None) -> None:
        """Put the run's figures (``figures``, the reference in the precision ``amp`` or fp32) into its final
        ``row``; ``row_line`` says them in one line."""
        row.update(self.columns(self.figures(device, amp or torch.float32)))

    def columns(self, figures: dict[str, Any]) -> dict[str, Any]:
        """The row's columns (``COLUMNS``) for ``figures``."""
        return {"run_flops": float(figures["total_flops"]), "run_fraction_of_matmul": figures["fraction_of_matmul"],
                "run_cost_json": json.dumps(figures)}


def summary_line(figures: dict[str, Any]) -> str:
    """One line: the run's fraction of the matmul rate, and where its wall time went."""
    fraction = figures["fraction_of_matmul"]
    parts = ", ".join(f"{LABELS[name]} {s:.1f} s" for name, s in figures["seconds"].items() if s >= 0.05)
    head = f"{100 * fraction:.1f}% of" if fraction is not None else "no figure against"
    return (f"run efficiency: {head} the {figures['matmul_dtype']} matmul rate ({figures['total_flops'] / 1e12:.3f} "
            f"TFLOP in {figures['wall_seconds']:.1f} s at {figures['matmul_tflops']:.3f} TFLOP/s; {parts})")


def breakdown(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A row's wall time by part (``run_cost_json``): seconds, share of the wall time, and FLOPs where counted."""
    figures = json.loads(row["run_cost_json"])
    wall = figures["wall_seconds"]
    flops = {"train": figures["flops"]["train"], "eval": figures["flops"]["eval"]}
    return [{"part": LABELS[name], "seconds": s, "share": s / wall if wall else None,
             "tflop": flops.get(name, 0) / 1e12} for name, s in figures["seconds"].items()]


def row_line(row: dict[str, Any]) -> str | None:
    """``summary_line`` of a row's figures; None for a row without them (written before they existed)."""
    return summary_line(json.loads(row["run_cost_json"])) if row.get("run_cost_json") else None
