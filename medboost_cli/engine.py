"""Training and evaluation.

Protocol: train on ``train``, score ``val`` after every epoch, keep the checkpoint with the best validation
metric (AUC by default; the earliest epoch wins a tie), then score ``test`` once, with that checkpoint. The
test split never chooses anything.

Reproducibility: data order, augmentation and dropout are drawn from generators seeded by (seed, epoch), so
a run resumed from its last epoch checkpoint replays exactly what an uninterrupted run would have done. Several
processes (``distributed``) split each global batch and draw order and augmentation for all of it, so a run can
be resumed on another number of processes; only the dropout masks depend on it.
Checkpoints hold the trainable weights, the optimiser and schedule, and the hash of the frozen LM layer
(never the layer itself).
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed, metrics
from .data import BatchTransform, Split, load_dataset
from .errors import Interrupted, ModelFileError, ResultsError
from .fileio import atomic_write
from .hardware import (
    autocast,
    autocast_dtype,
    device_name,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    set_threads,
)
from .distributed import World
from .locks import locked_run
from .models import BuiltModel, build_model, check_frozen_hash, count_parameters
from .models.untrusted import load_torch_dict
from .recipes import Recipe, saved_recipe
from .results import ResultsDir, find_run, git_commit, new_row, package_versions, read_row, write_row
from .seeding import EpochStream, dropout_seed, epoch_generator

CHECKPOINT_FORMAT = 1


class Reporter(Protocol):
    """What a run tells a progress display or an experiment tracker (trackers.py): ``start`` before the first
    epoch it trains, ``step`` per batch, ``epoch`` per finished epoch, ``close`` once training stops, and
    ``finish`` with the final row (completed, interrupted or failed) after that row is written."""

    def start(self, run_id: str, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def step(self, loss: float | None) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    def finish(self, row: dict[str, Any]) -> None: ...


class SilentReporter:
    def start(self, run_id, epochs, steps_per_epoch, first_epoch):
        pass

    def step(self, loss):
        pass

    def epoch(self, record):
        pass

    def close(self):
        pass

    def finish(self, row):
        pass


# ------------------------------------------------------------------------------------------------ pieces


def make_transforms(recipe: Recipe, backbone: nn.Module) -> tuple[BatchTransform, BatchTransform]:
    d = recipe.data
    common = dict(out_size=backbone.input_size, in_chans=backbone.in_chans, mean=backbone.mean, std=backbone.std)
    train = BatchTransform(**common, hflip=d.hflip, vflip=d.vflip, dflip=d.dflip, scale=tuple(d.scale),
                           translate=d.translate, rotate=d.rotate, padding=d.padding)
    return train, BatchTransform(**common)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, task_type: str, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = logits.float()
    if task_type == metrics.MULTILABEL:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels[:, 0], label_smoothing=label_smoothing)


def prepare_runner(model: nn.Module, recipe: Recipe, wrap=lambda module: module) -> nn.Module:
    """The module the loops call: channels-last and/or torch.compile when the recipe asks (both off by default,
    see the README's performance section), then ``wrap`` (DDP for several processes); it shares its parameters
    with ``model``."""
    if recipe.train.channels_last and recipe.task_info.dims == 2:
        model.to(memory_format=torch.channels_last)
    return wrap(torch.compile(model) if recipe.train.compile else model)


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) runs


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; no weight decay on biases, norms, position embeddings and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or any(k in name for k in ("pos_embed", "cls_token", "reg_token", "norm"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # torch's fused kernel (one pass over all parameters of a group) where it has one for every parameter's device,
    # instead of the default on CPU, a Python loop of several kernels per parameter tensor
    fused = all(p.device.type in FUSED_ADAMW_DEVICES and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=recipe.train.lr, fused=fused or None)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to ``min_lr``; a pure function of the step, so resuming is exact."""
    t = recipe.train
    total = t.epochs * steps_per_epoch
    warmup = min(int(t.warmup_epochs * steps_per_epoch), total - 1)
    floor = t.min_lr / t.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything in the state dict except frozen parameters."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - frozen
    if missing or result.unexpected_keys:
        raise ModelFileError(
            f"{where}: checkpoint does not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]}); was the recipe changed?"
        )


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, transform: BatchTransform, batch_size: int, amp: torch.dtype | None,
    task_type: str, world: World = World(),
) -> tuple[np.ndarray, float]:
    """Probabilities for every sample of ``split`` and the mean loss. With several processes (``world``), each
    scores its contiguous share of the samples and all of them get every score, in order: each sample once."""
    model.eval()
    device = next(model.parameters()).device
    lo, hi = world.share(len(split))
    scores, loss_sum = [], torch.zeros((), device=device)
    for start in range(lo, hi, batch_size):
        x = transform(split.images[start : min(start + batch_size, hi)])
        y = split.labels[start : min(start + batch_size, hi)]
        with autocast(device, amp):
            logits = model(x)
        loss_sum += loss_fn(logits, y, task_type) * len(y)
        scores.append(metrics.probabilities(logits, task_type))
    if world.size == 1:
        return torch.cat(scores).cpu().numpy(), float(loss_sum) / max(1, len(split))
    shares = distributed.gather((torch.cat(scores).cpu().numpy() if scores else None, float(loss_sum)))
    return np.concatenate([s for s, _ in shares if s is not None]), sum(l for _, l in shares) / max(1, len(split))


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)  # the last batch may be short; it still takes a step


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ training state


@dataclass
class TrainState:
    """What a run has done so far. Saved in ``last.pt`` beside the trainable weights, optimiser and schedule,
    so that ``--resume`` continues exactly where the run stopped."""

    epoch: int = -1  # the last finished epoch (0-based); -1 before the first
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    best_epoch: int | None = None
    best_value: float = -math.inf  # the selection metric of best_epoch, larger is better
    train_seconds: float = 0.0
    started_at: str = field(default_factory=_now)

    def add(self, record: dict[str, Any], select_metric: str) -> bool:
        """Append a finished epoch's record; True when it is the new best (the earliest epoch wins a tie)."""
        self.history.append(record)
        self.epoch = record["epoch"]
        self.train_seconds += record["seconds"]
        value = record[f"val_{select_metric}"]
        value = -math.inf if math.isnan(value) else -value if select_metric == "loss" else value
        if self.best_epoch is None or value > self.best_value:
            self.best_epoch, self.best_value = self.epoch, value
            return True
        return False

    def best_record(self) -> dict[str, Any]:
        return next((h for h in self.history if h["epoch"] == self.best_epoch), {})

    def patience_spent(self, patience: int | None) -> bool:
        return bool(patience) and self.best_epoch is not None and self.epoch - self.best_epoch >= patience


def save_checkpoint(path: Path, **content: Any) -> None:
    atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **content}, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = load_torch_dict(path, "the checkpoint is damaged: rerun without --resume")  # weights_only, and a dict
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: checkpoint format {ckpt.get('format')} is not {CHECKPOINT_FORMAT}")
    return ckpt


# ------------------------------------------------------------------------------------------------- a run


@dataclass
class Run:
    """One training run's parts: its recipe and data, the model and its optimiser, where it writes, its state."""

    recipe: Recipe
    results: ResultsDir
    device: torch.device
    amp: torch.dtype | None
    data: Any  # data.Dataset, on the device
    built: BuiltModel
    runner: nn.Module  # the module the loops call (compiled or not), sharing the model's parameters
    transforms: tuple[BatchTransform, BatchTransform]  # train (augmenting), eval
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    state: TrainState = field(default_factory=TrainState)
    world: World = field(default_factory=World)  # this process's place among the run's processes
    devices: list[str] = field(default_factory=list)  # every process's device name, in rank order

    @classmethod
    def build(cls, recipe: Recipe, data_dir: Path, results: ResultsDir) -> Run:
        set_threads(recipe.train.threads)
        device = distributed.device_for(recipe.train.device)
        world = distributed.init(device)  # several processes: join the group (gloo on CPU, NCCL on CUDA)
        data = load_dataset(recipe.task_info, recipe.data.size, data_dir, verify=recipe.data.verify,
                            select_metric=recipe.train.select_metric).to(device)
        built = build_model(recipe, recipe.task_info, device)  # each process loads the frozen layer itself
        optimizer = make_optimizer(built.model, recipe)
        steps = _steps_per_epoch(len(data.splits["train"]), recipe.train.batch_size)
        runner = prepare_runner(built.model, recipe, wrap=lambda module: distributed.wrap(module, device))
        distributed.check_shared(results.root)
        return cls(recipe, results, device, autocast_dtype(recipe.train.precision, device), data, built, runner,
                   make_transforms(recipe, built.model.backbone), optimizer, make_schedule(optimizer, recipe, steps),
                   world=world, devices=distributed.gather(device_name(device)))

    @property
    def run_id(self) -> str:
        return self.recipe.run_id()

    @property
    def steps_per_epoch(self) -> int:
        return _steps_per_epoch(len(self.data.splits["train"]), self.recipe.train.batch_size)

    def _identity(self) -> dict[str, Any]:
        return {"frozen_sha256": self.built.frozen_sha256, "config_hash": self.recipe.config_hash()}

    def write(self, row: dict[str, Any]) -> None:
        """Write the run's row: rank 0 alone, when several processes train it."""
        distributed.on_main(write_row, self.results.root, row)

    def save(self, improved: bool) -> None:
        """best.pt when the epoch is the new best, then last.pt (always): weights, optimiser, schedule, state.
        Rank 0 alone writes them; every process reads them back (``finalize``, ``restore``)."""
        if not self.world.is_main:
            return
        weights = trainable_state(self.built.model)
        if improved:
            save_checkpoint(self.results.best(self.run_id), epoch=self.state.epoch, trainable=weights,
                            **self._identity())
        save_checkpoint(self.results.last(self.run_id), **asdict(self.state), trainable=weights,
                        optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(), **self._identity())

    def restore(self, path: Path) -> None:
        """Continue from ``path`` (a last.pt), which must come from this configuration and frozen layer."""
        ckpt = load_checkpoint(path)
        if ckpt["config_hash"] != self.recipe.config_hash():
            raise ModelFileError(f"{path}: saved with another configuration; rerun without --resume")
        check_frozen_hash(self.built, ckpt["frozen_sha256"], str(path))
        load_trainable_state(self.built.model, ckpt["trainable"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.state = TrainState(**{f.name: ckpt[f.name] for f in fields(TrainState)})

    def row(self, status: str, **extra: Any) -> dict[str, Any]:
        """The run's results row as it stands, with ``status`` and any final columns in ``extra``."""
        r, s, built = self.recipe, self.state, self.built
        total, trainable = count_parameters(built.model)
        n_train = len(self.data.splits["train"])
        best = s.best_record()
        return new_row(
            run_id=self.run_id, status=status, task=r.task_info.short, flag=r.task_info.flag, size=r.data.size,
            backbone=r.backbone.name, booster=r.arm, llm=r.lm_source,
            layer=built.llm.layer if built.llm else None, frozen=r.booster.freeze, llm_init=r.booster.llm_init,
            lm_norm=built.llm.norm if built.llm else built.stack.norm_kind if built.stack else None, seed=r.seed,
            epochs=r.train.epochs,
            epochs_done=len(s.history), best_epoch=s.best_epoch,
            select_metric=r.train.select_metric, val_acc=best.get("val_acc"), val_auc=best.get("val_auc"),
            params_total=total, params_trainable=trainable, train_seconds=s.train_seconds,
            images_per_second=(n_train * len(s.history) / s.train_seconds) if s.train_seconds else None,
            memory_kind="gpu_allocated" if self.device.type == "cuda" else "process_rss",
            device=device_name(self.device), world_size=self.world.size, devices=json.dumps(self.devices),
            precision=str(self.amp).replace("torch.", "") if self.amp else "fp32",
            frozen_sha256=built.frozen_sha256, config_hash=r.config_hash(), config_json=r.model_dump_json(),
            history_json=json.dumps(s.history), versions_json=package_versions(), git_commit=git_commit(),
            started_at=s.started_at, **extra,
        )

    @distributed.peer_loss_interrupts
    def train_epoch(self, epoch: int, reporter: Reporter) -> dict[str, Any]:
        """One pass over the training split in the (seed, epoch) order, with that epoch's augmentation.

        ``train.batch_size`` is the global batch: with several processes each takes its contiguous share of it,
        with the affine maps drawn for the whole batch, and its loss is weighted by its share of the batch times
        the number of processes, so that DDP's mean of the gradients is the whole batch's mean gradient, also
        for a short or uneven last batch. Order, maps and schedule do not depend on the number of processes."""
        t, seed, split, world = self.recipe.train, self.recipe.seed, self.data.splits["train"], self.world
        torch.manual_seed(dropout_seed(seed, epoch, world.rank))
        order = torch.randperm(len(split), generator=epoch_generator(seed, epoch, EpochStream.DATA_ORDER))
        order = order.to(self.device)
        augment = epoch_generator(seed, epoch, EpochStream.AUGMENT)
        transform, spatial = self.transforms[0], split.images.ndim - 2
        self.runner.train()
        loss_sum = torch.zeros((), device=self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        for i, first in enumerate(range(0, len(split), t.batch_size)):
            idx = order[first : first + t.batch_size]
            theta = transform.maps(len(idx), spatial, augment)  # the whole batch's, on every process
            rows, weight, count = world.batch_share(len(idx))
            loss = train_step(self.runner, self.optimizer, split.images[idx[rows]], split.labels[idx[rows]], transform,
                              None, self.amp, self.recipe.task_info.task_type, t.label_smoothing, t.grad_clip,
                              theta=None if theta is None else theta[rows], loss_scale=weight,
                              micro_batch=t.micro_batch)
            self.schedule.step()
            loss_sum += loss * count
            reporter.step(loss.item() if (i % 10 == 0 and self.device.type == "cpu") else None)  # no GPU sync
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        train_loss = distributed.total(float(loss_sum)) / len(split)
        return {"epoch": epoch, "train_loss": train_loss, "lr": lr, "seconds": seconds}

    @distributed.peer_loss_interrupts
    def score(self, split: str) -> tuple[dict[str, float], np.ndarray, float]:
        """(metrics, probabilities, mean loss) of the current weights on ``split``, sharded over the processes."""
        target = self.data.splits[split]
        task_type = self.recipe.task_info.task_type
        distributed.sync_buffers(self.runner)
        scores, loss = predict(distributed.unwrap(self.runner), target, self.transforms[1],
                               self.recipe.train.eval_batch_size, self.amp, task_type, self.world)
        return metrics.evaluate(target.labels.cpu().numpy(), scores, task_type), scores, loss

    def validate(self) -> dict[str, float]:
        result, _, loss = self.score("val")
        return {"val_loss": loss, **{f"val_{k}": v for k, v in result.items()}}

    def finalize(self) -> dict[str, Any]:
        """Load the best validation epoch's weights and score the test split, once: the completed row."""
        distributed.peer_loss_interrupts(distributed.barrier)()  # rank 0 has written best.pt
        best = self.results.best(self.run_id)
        load_trainable_state(self.built.model, load_checkpoint(best)["trainable"], best)
        result, scores, _ = self.score("test")
        return self.row("completed", test_acc=result["acc"], test_auc=result["auc"], ended_at=_now(),
                        peak_memory_mb=max(distributed.gather(peak_memory_mb(self.device))),
                        test_labels=self.data.splits["test"].labels.cpu().numpy().tolist(),
                        test_scores=scores.astype(np.float32).tolist())


# ------------------------------------------------------------------------------------------------- train


@locked_run  # one process at a time trains a run (locks.py); a second one gets one line saying who
def train(recipe: Recipe, data_dir: Path, results_dir: Path, *, resume: bool = False, force: bool = False,
          reporter: Reporter | None = None, log=print) -> dict[str, Any]:
    """Train one run and return its results row (also written to ``results_dir``). A completed run is never
    trained again unless ``force``: with ``resume`` its row is returned, otherwise it is an error."""
    reporter, results, run_id = reporter or SilentReporter(), ResultsDir(results_dir), recipe.run_id()
    done = read_row(results.root, run_id)
    if done is not None and done["status"] == "completed" and not force:
        if resume:
            log(f"{run_id} is already completed; nothing to resume")
            return done
        auc = f"test AUC {done['test_auc']:.4f}, " if isinstance(done["test_auc"], float) else ""
        raise ResultsError(f"{run_id} is already completed ({auc}{results.row(run_id)}); use --force to train it "
                            f"again and replace that result")
    for stale in results.stale_writes(run_id):  # left by a killed write; the files they were for are whole
        stale.unlink(missing_ok=True)
    run = Run.build(recipe, Path(data_dir), results)
    last = results.last(run_id)
    if resume and last.exists():
        run.restore(last)
        log(f"resuming {run_id} after epoch {run.state.epoch + 1} of {recipe.train.epochs}")
    elif resume:
        log(f"no checkpoint for {run_id} under {last.parent}; starting from epoch 1")
    elif last.exists():
        log(f"an interrupted run {run_id} exists; starting it over (use --resume to continue it)")

    def record_row(row: dict[str, Any]) -> None:  # the row first: a reporter never stands between a run and its result
        run.write(row)
        reporter.finish(row)

    run.write(run.row("running"))
    reporter.start(run_id, recipe.train.epochs, run.steps_per_epoch, run.state.epoch + 1)
    reset_peak_memory(run.device)
    restore_signals = _signals_interrupt()
    try:
        for epoch in range(run.state.epoch + 1, recipe.train.epochs):
            record = run.train_epoch(epoch, reporter) | run.validate()
            run.save(improved=run.state.add(record, recipe.train.select_metric))
            reporter.epoch({**record, "best_epoch": run.state.best_epoch})
            if run.state.patience_spent(recipe.train.patience):
                log(f"stopping early: no better val {recipe.train.select_metric} for {recipe.train.patience} epochs")
                break
        reporter.close()
        final = run.finalize()
    except KeyboardInterrupt as e:
        distributed.on_sigterm(signal.SIG_IGN)  # a second SIGTERM (a launcher stopping all) must not cut the write
        by = e.signal_name if isinstance(e, Interrupted) else "the user (Ctrl-C)"
        record_row(run.row("interrupted", ended_at=_now(),
                          error=f"interrupted by {by}; continue with the same command and --resume"))
        raise
    except BaseException as e:
        distributed.on_sigterm(signal.SIG_IGN)
        record_row(run.row("failed", ended_at=_now(), error=f"{type(e).__name__}: {e}"))
        raise
    finally:
        restore_signals()
        reporter.close()
    record_row(final)
    distributed.on_main(last.unlink, missing_ok=True)  # the optimiser state is not needed once the run is complete
    return final


def _signals_interrupt():
    """Turn SIGTERM into ``Interrupted`` while a run trains, so that it leaves an "interrupted" row and its last
    epoch checkpoint, as Ctrl-C does (naming the error of another process that stopped first, when several
    train the run); returns the function that restores the previous handler."""
    return distributed.on_sigterm(distributed.interrupt)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               transform: BatchTransform, augment: torch.Generator | None, amp: torch.dtype | None, task_type: str,
               label_smoothing: float = 0.0, grad_clip: float | None = None, *, theta: torch.Tensor | None = None,
               loss_scale: float = 1.0, micro_batch: int | None = None) -> torch.Tensor:
    """One optimisation step on a uint8 batch already on the device; returns the (detached) mean loss, no host
    sync. ``theta``: the batch's affine maps, drawn beforehand (else from ``augment``); ``loss_scale``: the
    weight of this batch's mean loss in the gradient (a process's share of a global batch).

    ``micro_batch``: forward and backward at most this many samples at a time, each chunk's mean loss weighted by
    its share of the batch, then one clip and one optimizer step: the batch's gradient with one chunk's activations
    in memory. The maps are drawn for the whole batch first, as without chunks; under DDP the gradients are
    averaged once, after the last chunk. Equal to rounding, except that dropout and drop-path draw their masks
    chunk by chunk and a conv stem's BatchNorm normalises each chunk by its own statistics (as each process does
    under DDP on CPU)."""
    n = len(images)
    if theta is None and augment is not None:
        theta = transform.maps(n, images.ndim - 2, augment)  # the maps transform(images, augment) would draw
    optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=images.device)
    chunk = micro_batch or n
    for lo in range(0, n, chunk):  # one chunk (weight 1.0, exact) without micro_batch
        hi = min(lo + chunk, n)
        # DDP: no all-reduce until the last chunk's backward
        with (nullcontext() if hi == n or not hasattr(model, "no_sync") else model.no_sync()):
            x = transform(images[lo:hi], None, theta=None if theta is None else theta[lo:hi])
            with autocast(images.device, amp):
                logits = model(x)
            part = loss_fn(logits, labels[lo:hi], task_type, label_smoothing) * ((hi - lo) / n)
            (part * loss_scale).backward()
        loss += part.detach()
    if grad_clip:
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return loss.detach()

# ---------------------------------------------------------------------------------------------- evaluate


def load_run(run: str, results_dir: Path) -> tuple[dict[str, Any], Recipe, BuiltModel]:
    """A completed run's row, recipe and model with its best checkpoint loaded (frozen layer hash checked)."""
    row = find_run(Path(results_dir), run)
    if row["status"] != "completed":
        raise ResultsError(f"run {row['run_id']} has status '{row['status']}', not completed; finish it with --resume")
    recipe = saved_recipe(row["config_json"])
    best = ResultsDir(results_dir).best(row["run_id"])
    if not best.exists():
        raise ModelFileError(f"{best}: the run's best checkpoint is missing; retrain the run")
    set_threads(recipe.train.threads)
    built = build_model(recipe, recipe.task_info, resolve_device(recipe.train.device))
    ckpt = load_checkpoint(best)
    check_frozen_hash(built, ckpt["frozen_sha256"], str(best))
    load_trainable_state(built.model, ckpt["trainable"], best)
    built.model.eval()
    return row, recipe, built


def evaluate_run(run: str, results_dir: Path, data_dir: Path, split: str = "test") -> dict[str, Any]:
    """Re-score a saved run on ``split`` from its best checkpoint; returns the new and the recorded metrics."""
    row, recipe, built = load_run(run, results_dir)
    device = next(built.model.parameters()).device
    amp = autocast_dtype(recipe.train.precision, device)
    task = recipe.task_info
    data = load_dataset(task, recipe.data.size, Path(data_dir), verify=recipe.data.verify).to(device)
    _, eval_tf = make_transforms(recipe, built.model.backbone)
    target: Split = data.splits[split]
    scores, loss = predict(built.model, target, eval_tf, recipe.train.eval_batch_size, amp, task.task_type)
    result = metrics.evaluate(target.labels.cpu().numpy(), scores, task.task_type)
    return {"run_id": row["run_id"], "split": split, "acc": result["acc"], "auc": result["auc"], "loss": loss,
            "recorded_acc": row[f"{split}_acc"], "recorded_auc": row[f"{split}_auc"], "best_epoch": row["best_epoch"],
            "scores": scores, "labels": target.labels.cpu().numpy()}
