"""Data-parallel training of one run over several processes, one per device (torch.distributed, DDP).

Start the processes with torchrun, on one node or many (``torchrun --nproc-per-node N -m medboost_cli train ...``),
or let ``medboost train ... --devices N`` start N on this machine with torch.distributed's own launcher
(``launch_local``). Each process learns its place from what the launcher puts in its environment (``World``):
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT.

The number of processes changes where a run computes, not what (``engine.Run``): ``train.batch_size`` is the
global batch, split into contiguous shares (``World.share``); each share's loss is scaled so that DDP's average
of the processes' gradients is the global batch's mean gradient; the data order and the augmentation are drawn
for the whole global batch from (seed, epoch) on every process; validation and test are sharded the same way
and gathered, so every sample is scored once. What still differs: dropout masks (``seeding.dropout_seed``), and
on CPU the BatchNorm statistics of a convolutional stem, which each process computes over its own share (on
CUDA they are synchronised, ``SyncBatchNorm``); and rounding.

Rank 0 alone writes rows and checkpoints; the results folder must be one folder that every process sees
(``check_shared``), as checkpoints are read back by all of them.

Failures (``session``): whatever fails on one process ends every process, and one line reports it, the line of
the process where it started, printed by rank 0 with that problem's exit code; the other processes stay quiet.
A process other than rank 0 that fails posts its line in the launcher's key-value store and exits, which makes
the collectives the others wait in fail (``PeerLost``) and the launcher stop them (SIGTERM); rank 0 then prints
its own error if it is a medboost error, else the first line another process posted, else its own.
Limitation: a process blocked in a CUDA call (NCCL) cannot run its handlers, and the launcher kills it after its
grace period (30 s); if that is rank 0, the failed process's exit code, in torchrun's summary, is what remains.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import ConfigError, Interrupted, MedboostError, ResultsError, explain
from .fileio import write_bytes
from .hardware import resolve_device

_ERRORS = "medboost/errors"  # the key in the launcher's store under which failed processes post their line


class BatchShare(NamedTuple):
    rows: slice  # the rows of the batch this process trains on
    weight: float  # the weight of their mean loss in this process's gradient
    count: int  # the batch's samples they stand for (0 for the weight-0 stand-in row)


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` of ``local_size`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """The contiguous rows [lo, hi) of ``n`` that this process takes: as even as possible, the first
        ``n % size`` processes one more (numpy's ``array_split``). Empty when ``n`` < ``size`` for the last ones."""
        base, extra = divmod(n, self.size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)

    def batch_share(self, n: int) -> BatchShare:
        """This process's rows of a batch of ``n`` and the weight of their mean loss: their share of the batch
        times the number of processes, so that DDP's mean of the processes' gradients is the whole batch's mean
        gradient, also for a short or uneven last batch. With fewer rows than processes, a process left without
        one takes the first row at weight 0, which keeps it in step with the others' collectives."""
        lo, hi = self.share(n)
        if lo == hi:
            return BatchShare(slice(0, 1), 0.0, 0)
        return BatchShare(slice(lo, hi), (hi - lo) * self.size / n, hi - lo)


def world() -> World:
    """This process's place, from the environment torchrun (or ``launch_local``) sets; one process without it."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank, local_size = int(env.get("LOCAL_RANK", rank)), int(env.get("LOCAL_WORLD_SIZE", size))
    except ValueError:
        names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        found = ", ".join(f"{k}={env[k]!r}" for k in names if k in env)
        raise ConfigError(f"the environment says {found}: these must be integers (start the processes with "
                          f"torchrun)") from None
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise ConfigError(f"the environment says RANK={rank} of WORLD_SIZE={size} (LOCAL_RANK={local_rank} of "
                          f"LOCAL_WORLD_SIZE={local_size}); start the processes with torchrun")
    return World(rank, size, local_rank, local_size)


# ------------------------------------------------------------------------------------------ process group

_store: dist.Store | None = None


def _connect() -> dist.Store:
    """The launcher's key-value store (torchrun's, or rank 0's): the process group is built on it, and failed
    processes post their error line in it."""
    global _store
    if _store is None:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {' and '.join(missing)} not set; start "
                              f"the processes with torchrun or `medboost train ... --devices N`")
        _store, _, _ = next(dist.rendezvous("env://"))
    return _store


def device_for(request: str) -> torch.device:
    """The device of this process: ``train.device`` as for one process; with several, CUDA means the GPU of
    this process's LOCAL_RANK (so one GPU per process), and a fixed ``cuda:N`` is refused."""
    device, w = resolve_device(request), world()
    if w.size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"train.device={request} names one GPU but {w.size} processes share this run; use "
                          f"train.device=cuda (each process takes the GPU of its LOCAL_RANK)")
    count = torch.cuda.device_count()
    if w.local_rank >= count:
        raise ConfigError(f"{w.local_size} processes on this node, which has {count} GPU(s); start at most {count} "
                          f"per node")
    torch.cuda.set_device(w.local_rank)
    return torch.device("cuda", w.local_rank)


def init(device: torch.device) -> World:
    """Join the run's process group, once per process: NCCL when it trains on CUDA, gloo on CPU."""
    w = world()
    if w.size > 1 and not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", store=_connect(), rank=w.rank, world_size=w.size,
                                device_id=device if cuda else None)
    return w


def shutdown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train it, else itself.

    Frozen parameters (the LM layer F_L) are left to DDP neither to broadcast nor to reduce: each process loads
    them itself from the same file. Every trainable parameter takes part in every step in all booster modes, so
    DDP looks for no unused ones. On CUDA, BatchNorm layers become SyncBatchNorm (statistics of the global batch).
    """
    if world().size == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # keeps the same Parameter objects
    # DDP warns when a gradient's strides differ from its bucket's; the class token's (1, 1, D) gradient has
    # arbitrary strides on its size-1 axes, which cost nothing
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (what evaluation calls: it needs no collective), or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers before an evaluation. DDP broadcasts them before each training
    step, but the last step leaves each process with BatchNorm running statistics of its own share (on CPU), and
    every process must score its shard with the model rank 0 saves."""
    if world().size > 1:
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, src=0)


# ------------------------------------------------------------------------------------------ collectives


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process; ``[obj]`` for one process."""
    if world().size == 1:
        return [obj]
    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def total(value: float) -> float:
    """The sum of ``value`` over the processes, the same on all of them; ``value`` itself for one process."""
    return value if world().size == 1 else sum(gather(value))


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def on_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on rank 0 only (the writes of a run); None elsewhere."""
    return fn(*args, **kwargs) if world().is_main else None


def check_shared(folder: Path) -> None:
    """Refuse a results folder that the processes do not share (a local folder on each node of a multi-node
    run): rank 0 writes the checkpoints that all processes read back."""
    if world().size == 1:
        return
    token = gather(uuid.uuid4().hex if world().is_main else None)[0]
    marker = Path(folder) / f".medboost-shared-{token}"
    if world().is_main:
        write_bytes(marker, b"")
    barrier()
    sees = gather(marker.exists())
    barrier()
    on_main(marker.unlink, missing_ok=True)
    blind = [rank for rank, seen in enumerate(sees) if not seen]
    if blind:
        raise ResultsError(f"{folder}: process(es) {blind} do not see the files rank 0 writes there; give "
                           f"--results-dir a folder that every node shares, at the same path")


# ------------------------------------------------------------------------------------------ failures


class PeerFailed(MedboostError):
    """What another process failed with, as rank 0 reports it: that process's kind of error and exit code."""

    def __init__(self, rank: int, kind: str, message: str, exit_code: int):
        super().__init__(f"rank {rank}: {message}")
        self.kind, self.exit_code = kind, exit_code


class PeerLost(Interrupted):
    """A collective failed because another process of the run stopped (killed, or failed itself): this one
    stops too, as when interrupted; the run continues with --resume."""


_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def _lost_peer(error: BaseException) -> bool:
    return isinstance(error, dist.DistError) or any(text in str(error) for text in _LOST)


def peer_loss_interrupts(fn: Callable) -> Callable:
    """Decorate a function that runs collectives: when one fails because another process is gone, raise
    ``PeerLost`` (an interruption, which saves nothing new and resumes), naming that process's error if it
    posted one, instead of the backend's RuntimeError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            if world().size == 1 or not _lost_peer(e):
                raise
            raise _peer_lost() from e

    return wrapper


def _post(store: dist.Store, rank: int, error: BaseException) -> None:
    kind, message, code = explain(error)
    number = store.add(_ERRORS, 1)
    store.set(f"{_ERRORS}/{number}", json.dumps({"rank": rank, "kind": kind, "message": message, "code": code,
                                                  "interrupt": isinstance(error, KeyboardInterrupt)}))


def _first_posted() -> dict[str, Any] | None:
    """The first error another process posted that is not an interruption (a consequence, not a cause)."""
    if _store is None:
        return None
    try:
        for number in range(1, _store.add(_ERRORS, 0) + 1):
            key = f"{_ERRORS}/{number}"
            _store.wait([key], timedelta(seconds=5))
            posted = json.loads(_store.get(key))
            if not posted["interrupt"] and posted["rank"] != world().rank:
                return posted
    except (RuntimeError, ValueError):  # the store is gone (its host stopped): nothing more to learn
        pass
    return None


def on_sigterm(handler) -> Callable[[], None]:
    """Install ``handler`` for SIGTERM (main thread only); returns the function that puts the previous one back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _peer_lost(first: dict[str, Any] | None = None) -> PeerLost:
    first = first or _first_posted()
    return PeerLost(f"rank {first['rank']}'s {first['kind']} ({first['message']})" if first
                    else "the loss of another process")


def interrupt(signum, frame):
    """A SIGTERM handler: ``Interrupted``, or in a run of several processes where another one failed first (the
    launcher then stops the others), ``PeerLost`` naming that process's error."""
    first = _first_posted() if world().size > 1 else None
    raise _peer_lost(first) if first else Interrupted(signal.Signals(signum).name)


def _settle(error: BaseException, w: World) -> BaseException:
    """The exception this process ends with after ``error`` (see the module's docstring)."""
    if not w.is_main:
        try:
            _post(_store, w.rank, error)
        except RuntimeError:  # no store to tell rank 0: say it here
            kind, message, _ = explain(error)
            print(f"{kind}: rank {w.rank}: {message}", file=sys.stderr, flush=True)
        return SystemExit(explain(error)[2])
    on_sigterm(signal.SIG_IGN)  # the launcher stops every process once one has exited: report first
    first = None if isinstance(error, MedboostError) else _first_posted()
    return PeerFailed(first["rank"], first["kind"], first["message"], first["code"]) if first else error


@contextmanager
def session() -> Iterator[World]:
    """The span of one command in one process of a run; for one process, nothing more.

    Rank 0 turns SIGTERM into ``Interrupted`` (the launcher sends it when another process has failed, and rank 0
    must live to report that). On an error, rank 0 ends with the exception to report (its own, or ``PeerFailed``
    with another process's); the others post theirs and end with a quiet ``SystemExit`` of its exit code. The
    process group is left at the end."""
    w = world()
    if w.size == 1:
        yield w
        return
    _connect()
    restore = on_sigterm(interrupt) if w.is_main else (lambda: None)
    try:
        yield w
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (None, 0):
            restore()
            raise
        settled = _settle(e, w)  # SIGTERM stays ignored on rank 0 until it has printed and exited
        if settled is e:
            raise
        raise settled from (None if isinstance(e, SystemExit) else e)
    else:
        restore()
    finally:
        shutdown()


# ------------------------------------------------------------------------------------------ launching


def launch_local(devices: int, argv: list[str]) -> int:
    """Run ``python -m medboost_cli ARGV`` in ``devices`` processes on this machine with torch.distributed's
    elastic launcher (what torchrun runs), and return the exit code the run ends with: rank 0's (which reported
    the error, if any), else the first failed process's. The processes print; the launcher stays quiet."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: the cores shared out, not every process on all of them
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // devices))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)("-m", "medboost_cli", *argv)
    except ChildFailedError as e:
        failures = e.failures
        main = failures.get(0)
        chosen = main if main and main.exitcode > 0 else min(failures.values(), key=lambda f: f.timestamp)
        return chosen.exitcode if chosen.exitcode > 0 else 128 - chosen.exitcode  # killed by a signal: 128 + it
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0
