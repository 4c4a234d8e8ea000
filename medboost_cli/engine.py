"""Training: a run's parts (``Run``) and the loop that trains it (``train``).

Protocol: train on ``train``, score ``val`` after every epoch, keep the checkpoint with the best validation
metric (AUC by default; the earliest epoch wins a tie), then score ``test`` once, with that checkpoint. The
test split never chooses anything.

Reproducibility: data order, augmentation and dropout are drawn from generators seeded by (seed, epoch), so
a run resumed from its last epoch checkpoint replays exactly what an uninterrupted run would have done. Several
processes (``distributed``) split each global batch and draw order and augmentation for all of it, so a run can
be resumed on another number of processes; only the dropout masks depend on it.
Checkpoints (checkpoints.py) hold the trainable weights, the optimiser and schedule, and the hash of the frozen LM
layer (never the layer itself). One step of training or scoring is steps.py's; scoring a saved run again is
evaluation.py's.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn

from . import distributed, metrics
from .checkpoints import (CHECKPOINT_FORMAT, TrainState, load_checkpoint, load_trainable_state, save_checkpoint,
                          trainable_state)
from .checkpoints import now as _now
from .compile_cache import compile_model
from .data import BatchTransform, load_dataset
from .distributed import World
from .errors import Interrupted, ModelFileError, ResultsError
from .evaluation import evaluate_run, load_run
from .hardware import autocast_dtype, device_name, peak_memory_mb, reset_peak_memory, set_threads
from .locks import locked_run
from .models import BuiltModel, build_model, check_frozen_hash, count_parameters
from .recipes import Recipe
from .results import ResultsDir, git_commit, new_row, package_versions, read_row, write_row
from .run_cost import RunCost
from .seeding import EpochStream, dropout_seed, epoch_generator
from .steps import loss_fn, make_transforms, predict, train_step

__all__ = [  # the names of this module, with the pieces it takes from steps, checkpoints and evaluation
    "CHECKPOINT_FORMAT", "Reporter", "Run", "SilentReporter", "TrainState", "evaluate_run", "load_checkpoint",
    "load_run", "load_trainable_state", "loss_fn", "make_optimizer", "make_schedule", "make_transforms", "predict",
    "prepare_runner", "save_checkpoint", "train", "train_step", "trainable_state",
]


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


def prepare_runner(model: nn.Module, recipe: Recipe, wrap=lambda module: module) -> nn.Module:
    """The module the loops call: channels-last and/or torch.compile when the recipe asks (both off by default,
    see the README's performance section; compile_cache.py says where compiled graphs are kept), then ``wrap``
    (DDP for several processes); it shares its parameters with ``model``."""
    if recipe.train.channels_last and recipe.task_info.dims == 2:
        model.to(memory_format=torch.channels_last)
    return wrap(compile_model(model) if recipe.train.compile else model)


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) runs


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; no weight decay on 1-D parameters (biases, norm weights) and on those
    a part of the model (backbone, booster, head) names in its ``no_weight_decay()``: a ViT's position table and
    CLS token, say (each backbone family's module says which)."""
    skip = {f"{part}.{name}" for part, module in model.named_children()
            if callable(getattr(module, "no_weight_decay", None)) for name in module.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name in skip else decay).append(p)
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


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)  # the last batch may be short; it still takes a step


# ------------------------------------------------------------------------------------------ training state


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
    cost: RunCost | None = None  # wall time by part and FLOPs (run_cost.py)

    @classmethod
    def build(cls, recipe: Recipe, data_dir: Path, results: ResultsDir, cost: RunCost | None = None) -> Run:
        cost = cost or RunCost()  # from the start of the process (run_cost.py)
        set_threads(recipe.train.threads)
        device = distributed.device_for(recipe.train.device)
        world = distributed.init(device)  # several processes: join the group (gloo on CPU, NCCL on CUDA)
        with cost.part("data"):
            data = load_dataset(recipe.task_info, recipe.data.size, data_dir, verify=recipe.data.verify,
                                select_metric=recipe.train.select_metric).to(device)
        with cost.part("model"):
            built = build_model(recipe, recipe.task_info, device)  # each process loads the frozen layer itself
            optimizer = make_optimizer(built.model, recipe)
            runner = prepare_runner(built.model, recipe, wrap=lambda module: distributed.wrap(module, device))
        steps = _steps_per_epoch(len(data.splits["train"]), recipe.train.batch_size)
        distributed.check_shared(results.root)
        return cls(recipe, results, device, autocast_dtype(recipe.train.precision, device), data, built, runner,
                   make_transforms(recipe, built.model.backbone), optimizer, make_schedule(optimizer, recipe, steps),
                   world=world, devices=distributed.gather(device_name(device)), cost=cost)

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
        with self.cost.part("row"):
            distributed.on_main(write_row, self.results.root, row)

    def save(self, improved: bool) -> None:
        """best.pt when the epoch is the new best, then last.pt (always): weights, optimiser, schedule, state.
        Rank 0 alone writes them; every process reads them back (``finalize``, ``restore``)."""
        if not self.world.is_main:
            return
        with self.cost.part("checkpoints"):
            weights = trainable_state(self.built.model)
            if improved:
                save_checkpoint(self.results.best(self.run_id), epoch=self.state.epoch, trainable=weights,
                                **self._identity())
            save_checkpoint(self.results.last(self.run_id), **asdict(self.state), trainable=weights,
                            optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(),
                            **self._identity())

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
            loss = self.cost.train_step(len(idx[rows]), lambda: train_step(
                self.runner, self.optimizer, split.images[idx[rows]], split.labels[idx[rows]], transform, None,
                self.amp, self.recipe.task_info.task_type, t.label_smoothing, t.grad_clip,
                theta=None if theta is None else theta[rows], loss_scale=weight, micro_batch=t.micro_batch))
            self.schedule.step()
            loss_sum += loss * count
            reporter.step(loss.item() if (i % 10 == 0 and self.device.type == "cpu") else None)  # no GPU sync
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.cost.seconds["train"] += seconds
        train_loss = distributed.total(float(loss_sum)) / len(split)
        return {"epoch": epoch, "train_loss": train_loss, "lr": lr, "seconds": seconds}

    @distributed.peer_loss_interrupts
    def score(self, split: str) -> tuple[dict[str, float], np.ndarray, float]:
        """(metrics, probabilities, mean loss) of the current weights on ``split``, sharded over the processes."""
        target = self.data.splits[split]
        task_type = self.recipe.task_info.task_type
        distributed.sync_buffers(self.runner)
        scores, loss = self.cost.evaluation(split, lambda: predict(
            distributed.unwrap(self.runner), target, self.transforms[1], self.recipe.train.eval_batch_size, self.amp,
            task_type, self.world))
        return metrics.evaluate(target.labels.cpu().numpy(), scores, task_type), scores, loss

    def validate(self) -> dict[str, float]:
        result, _, loss = self.score("val")
        return {"val_loss": loss, **{f"val_{k}": v for k, v in result.items()}}

    def finalize(self) -> dict[str, Any]:
        """Load the best validation epoch's weights and score the test split, once: the completed row."""
        distributed.peer_loss_interrupts(distributed.barrier)()  # rank 0 has written best.pt
        best = self.results.best(self.run_id)
        with self.cost.part("checkpoints"):
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
        run.cost.close(row, run.device, run.amp)  # the run-level figure (run_cost.py), shown by the caller
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


# ---------------------------------------------------------------------------------------------- evaluate
