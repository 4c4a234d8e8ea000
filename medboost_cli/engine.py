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
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import budget, distributed, metrics, panel, precision
from .attempts import Attempt, pending_commit, roll_forward
from .checkpoint_checks import check_checkpoint
from .checkpoints import (CHECKPOINT_FORMAT, TrainState, load_checkpoint, load_trainable_state, save_checkpoint,
                          trainable_state)
from .checkpoints import now as _now
from .data import BatchTransform, load_dataset
from .distributed import World
from .errors import Interrupted, ResultsError, TrainingDiverged
from .evaluation import evaluate_run, load_run
from .hardware import autocast_dtype, device_name, peak_memory_mb, reset_peak_memory, set_threads
from .locks import locked_run
from .models import BuiltModel, build_model, check_frozen_hash, check_model, count_parameters
from .recipes import Recipe
from .reporters import Reporter, SilentReporter
from .results import ResultsDir, git_commit, new_row, package_versions, read_row, run_manifest
from .results.folder_errors import as_results_error, folder_errors
from .run_cost import RunCost
from .seeding import EpochStream, dropout_seed, epoch_generator
from .optimisation import _steps_per_epoch, make_optimizer, make_schedule, prepare_runner
from .steps import loss_fn, make_transforms, predict, train_step

__all__ = [  # the names of this module, with the pieces it takes from steps, checkpoints and evaluation
    "CHECKPOINT_FORMAT", "Reporter", "Run", "SilentReporter", "TrainState", "evaluate_run", "load_checkpoint",
    "load_run", "load_trainable_state", "loss_fn", "make_optimizer", "make_schedule", "make_transforms", "predict",
    "prepare_runner", "save_checkpoint", "train", "train_step", "trainable_state",
]


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
    staged: bool = False  # retraining a completed run, whose result stays until this one completes (attempts.py)
    cost: RunCost | None = None  # wall time by part and FLOPs (run_cost.py)
    data_dir: str | None = None  # the folder the data came from, recorded in the row
    auto_precision: precision.Decision | None = None  # what precision auto resolved to, where a key says auto
    val_scores: dict[str, np.ndarray] = field(default_factory=dict)  # the last and the best epoch's (panel.py)
    val_subset: int | None = None  # the validation subset's size where selection uses one (budget.py)

    @classmethod
    def build(cls, recipe: Recipe, data_dir: Path, results: ResultsDir, cost: RunCost | None = None) -> Run:
        cost = cost or RunCost()  # from the start of the process (run_cost.py)
        set_threads(recipe.train.threads)
        device = distributed.device_for(recipe.train.device)
        world = distributed.init(device)  # several processes: join the group (gloo on CPU, NCCL on CUDA)
        check_model(recipe, recipe.task_info)  # the backbone family's checks of the keys, before the data is read
        with cost.part("data"):
            data = load_dataset(recipe.task_info, recipe.data.size, data_dir, verify=recipe.data.verify,
                                select_metric=recipe.train.select_metric).to(device)
            subset = budget.subset_size(recipe.train.val_subset, len(data.splits["val"]))
            data = budget.with_val_subset(data, recipe.train.val_subset)  # selection on a fixed subset, if asked
        with cost.part("model"):  # with the measurement that resolves precision auto (precision.py), if any
            decision = precision.decide(recipe, device, main=world.is_main, share=distributed.gather)
            concrete = precision.resolved(recipe, decision)  # auto replaced; the run's id keeps the recipe's
            built = build_model(concrete, recipe.task_info, device)  # each process loads the frozen layer itself
            optimizer = make_optimizer(built.model, recipe)
            runner = prepare_runner(built.model, recipe, wrap=lambda module: distributed.wrap(module, device))
        steps = _steps_per_epoch(len(data.splits["train"]), recipe.train.batch_size)
        distributed.check_shared(results.root)
        cost.extra.update(precision.record(decision))
        return cls(recipe, results, device, autocast_dtype(concrete.train.precision, device), data, built, runner,
                   make_transforms(recipe, built.model.backbone), optimizer, make_schedule(optimizer, recipe, steps),
                   world=world, devices=distributed.gather(device_name(device)), cost=cost,
                   data_dir=str(Path(data_dir).resolve()), val_subset=subset, auto_precision=decision)

    @property
    def run_id(self) -> str:
        return self.recipe.run_id()

    @property
    def steps_per_epoch(self) -> int:
        return _steps_per_epoch(len(self.data.splits["train"]), self.recipe.train.batch_size)

    @property
    def attempt(self) -> Attempt:
        return Attempt(self.results, self.run_id, self.staged)

    def _identity(self) -> dict[str, Any]:
        return {"frozen_sha256": self.built.frozen_sha256, "config_hash": self.recipe.config_hash()}

    def write(self, row: dict[str, Any]) -> None:
        """Write the run's row: rank 0 alone, when several processes train it."""
        with self.cost.part("row"):
            distributed.on_main(self.attempt.write, row)

    def save(self, improved: bool) -> None:
        """best.pt when the epoch is the new best, then last.pt (always): weights, optimiser, schedule, state.
        Rank 0 alone writes them; every process reads them back (``finalize``, ``restore``)."""
        if improved:
            self.val_scores["best"] = self.val_scores.get("last")
        if not self.world.is_main:
            return
        with self.cost.part("checkpoints"):
            weights = trainable_state(self.built.model)
            if improved:
                save_checkpoint(self.attempt.best, epoch=self.state.epoch, trainable=weights,
                                **self._identity())
            save_checkpoint(self.attempt.last, **asdict(self.state), trainable=weights,
                            optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(),
                            **self._identity())

    def restore(self, path: Path) -> None:
        """Continue from ``path`` (a last.pt), which must come from this configuration, model and frozen layer."""
        ckpt = load_checkpoint(path)
        check_checkpoint(ckpt, path, "last", self.built.model, self.optimizer, self.recipe.config_hash())
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
            resize=r.data.resize, backbone=r.backbone.name, booster=r.arm, llm=r.lm_source,
            layer=built.llm.layer if built.llm else None, frozen=r.booster.freeze, llm_init=r.booster.llm_init,
            lm_norm=built.llm.norm if built.llm else built.stack.norm_kind if built.stack else None, seed=r.seed,
            epochs=r.train.epochs,
            epochs_done=len(s.history), best_epoch=s.best_epoch, **budget.row_columns(self),
            select_metric=r.train.select_metric, val_acc=best.get("val_acc"), val_auc=best.get("val_auc"),
            params_total=total, params_trainable=trainable, train_seconds=s.train_seconds,
            images_per_second=(budget.images_seen(s.history, n_train) / s.train_seconds) if s.train_seconds else None,
            memory_kind="gpu_allocated" if self.device.type == "cuda" else "process_rss",
            device=device_name(self.device), world_size=self.world.size, devices=json.dumps(self.devices),
            precision=str(self.amp).replace("torch.", "") if self.amp else "fp32",
            frozen_sha256=built.frozen_sha256, config_hash=r.config_hash(), config_json=r.model_dump_json(),
            history_json=json.dumps(s.history), versions_json=package_versions(), git_commit=git_commit(),
            manifest_json=run_manifest(self.data.path, device_name(self.device), r.lm_source, built.frozen_sha256,
                                       built.lm_files),
            started_at=s.started_at, data_dir=self.data_dir, **extra,
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
        self.runner.train()
        loss_sum = torch.zeros((), device=self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        for i, first in enumerate(range(0, len(split), t.batch_size)):
            loss, count = self.batch_step(split, order[first : first + t.batch_size], augment)
            self.schedule.step()
            loss_sum += loss * count
            reporter.step(loss.item() if (i % 10 == 0 and self.device.type == "cpu") else None)  # no GPU sync
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.cost.seconds["train"] += seconds
        train_loss = distributed.total(float(loss_sum)) / len(split)
        return {"epoch": epoch, "train_loss": train_loss, "lr": lr, "seconds": seconds}

    def batch_step(self, split, idx: torch.Tensor, augment: torch.Generator) -> tuple[torch.Tensor, int]:
        """One optimizer step on the samples ``idx`` of ``split`` (this process's share of them), the batch's affine
        maps drawn from ``augment``: (this process's loss, its number of samples)."""
        t, transform = self.recipe.train, self.transforms[0]
        theta = transform.maps(len(idx), split.images.ndim - 2, augment)  # the whole batch's, on every process
        rows, weight, count = self.world.batch_share(len(idx))
        loss = self.cost.train_step(len(idx[rows]), lambda: train_step(
            self.runner, self.optimizer, split.images[idx[rows]], split.labels[idx[rows]], transform, None,
            self.amp, self.recipe.task_info.task_type, t.label_smoothing, t.grad_clip,
            theta=None if theta is None else theta[rows], loss_scale=weight, micro_batch=t.micro_batch))
        return loss, count

    @distributed.peer_loss_interrupts
    def score(self, split: str) -> tuple[dict[str, float], np.ndarray, float]:
        """(metrics, probabilities, mean loss) of the current weights on ``split``, sharded over the processes."""
        target = self.data.splits[split]
        task_type = self.recipe.task_info.task_type
        distributed.sync_buffers(self.runner)
        scores, loss = self.cost.evaluation(split, lambda: predict(
            distributed.unwrap(self.runner), target, self.transforms[1], self.recipe.train.eval_batch_size, self.amp,
            task_type, self.world))
        if not np.isfinite(scores).all():
            self.diverged(f"{split} scores", "NaN or infinite", len(self.state.history) + (split != "test"))
        return metrics.evaluate(target.labels.cpu().numpy(), scores, task_type), scores, loss

    def diverged(self, what: str, value: Any, epoch: int) -> None:
        """Stop a run whose ``what`` (a loss, scores) is no longer a finite number at ``epoch`` (1-based)."""
        t = self.recipe.train
        clip = f"lower train.grad_clip (now {t.grad_clip})" if t.grad_clip else "set train.grad_clip (e.g. 1.0)"
        of = budget.points(t, self.steps_per_epoch)  # epochs, or a step budget's evaluation points
        raise TrainingDiverged(f"{self.run_id} diverged at epoch {epoch} of {of} ({what}: {value}); "
                               f"lower train.lr (now {t.lr:g}, --lr) or {clip}, then train again")

    def validate(self) -> dict[str, float]:
        result, self.val_scores["last"], loss = self.score("val")
        return {"val_loss": loss, **{f"val_{k}": v for k, v in result.items()}}

    def finalize(self) -> dict[str, Any]:
        """Load the best validation epoch's weights and score the test split, once: the completed row."""
        distributed.peer_loss_interrupts(distributed.barrier)()  # rank 0 has written best.pt
        best = self.attempt.best
        with self.cost.part("checkpoints"):
            ckpt = load_checkpoint(best)
            check_checkpoint(ckpt, best, "best", self.built.model)
            load_trainable_state(self.built.model, ckpt["trainable"], best)
        result, scores, _ = self.score("test")
        return self.row("completed", test_acc=result["acc"], test_auc=result["auc"], ended_at=_now(),
                        **panel.run_panel(self, scores),
                        peak_memory_mb=max(distributed.gather(peak_memory_mb(self.device))),
                        test_labels=self.data.splits["test"].labels.cpu().numpy().tolist(),
                        test_scores=scores.astype(np.float32).tolist())


# ------------------------------------------------------------------------------------------------- train


def train(recipe: Recipe, data_dir: Path, results_dir: Path, *, resume: bool = False, force: bool = False,
          reporter: Reporter | None = None, log=print) -> dict[str, Any]:
    """Train one run and return its results row (also written to ``results_dir``). A completed run is never
    trained again unless ``force``: with ``resume`` its row is returned, otherwise it is an error. A completed
    run's result stays until a forced retraining of it has completed (attempts.py). Asking about a completed run
    only reads the folder (no lock), so that it works in a read-only one."""
    results = ResultsDir(results_dir)
    with folder_errors(results.root):  # a full disk, a read-only folder: one results error (exit 5)
        done = None if pending_commit(results, recipe.run_id()) else _completed(results, recipe.run_id(), resume,
                                                                                    force, log)
        if done is not None:
            return done
        return _train(recipe, data_dir, results_dir, resume=resume, force=force, reporter=reporter, log=log)


def _completed(results: ResultsDir, run_id: str, resume: bool, force: bool, log) -> dict[str, Any] | None:
    """The completed row to return instead of training (``resume``), None to train; a ResultsError for a completed
    run asked to train again without ``force``."""
    done = read_row(results.root, run_id)
    if done is None or done["status"] != "completed" or force:
        return None
    if resume:
        log(f"{run_id} is already completed; nothing to resume")
        return done
    auc = f"test AUC {done['test_auc']:.4f}, " if isinstance(done["test_auc"], float) else ""
    raise ResultsError(f"{run_id} is already completed ({auc}{results.row(run_id)}); use --force to train it "
                        f"again and replace that result")


@locked_run  # one process at a time trains a run (locks.py); a second one gets one line saying who
def _train(recipe: Recipe, data_dir: Path, results_dir: Path, *, resume: bool, force: bool,
           reporter: Reporter | None, log) -> dict[str, Any]:
    reporter, results, run_id = reporter or SilentReporter(), ResultsDir(results_dir), recipe.run_id()
    distributed.on_main(roll_forward, results, run_id, log)  # a retraining killed while it replaced the result
    done = _completed(results, run_id, resume, force, log)  # completed meanwhile by another process
    if done is not None:
        return done
    done = read_row(results.root, run_id)
    for stale in results.stale_writes(run_id):  # left by a killed write; the files they were for are whole
        stale.unlink(missing_ok=True)
    run = Run.build(recipe, Path(data_dir), results)
    distributed.on_main(precision.announce, run.auto_precision, log)
    run.staged = done is not None and done["status"] == "completed"
    last = results.last(run_id)
    if resume and last.exists():
        run.restore(last)
        log(f"resuming {run_id} after epoch {run.state.epoch + 1} of {budget.points(recipe.train, run.steps_per_epoch)}")
    elif resume:
        log(f"no checkpoint for {run_id} under {last.parent}; starting from epoch 1")
    elif last.exists():
        log(f"an interrupted run {run_id} exists; starting it over (use --resume to continue it)")
    run.write(run.row("running"))
    reporter.start(run_id, budget.points(recipe.train, run.steps_per_epoch),
                   budget.steps_per_point(recipe.train, run.steps_per_epoch),
                   run.state.epoch + 1, "point" if budget.binds(recipe.train, run.steps_per_epoch) else "epoch")
    reset_peak_memory(run.device)
    final = _epochs(run, reporter, log)
    _record_end(run, final, reporter, commit=True)
    return final


def _epochs(run: Run, reporter: Reporter, log) -> dict[str, Any]:
    """The run's remaining epochs, then its test pass: the completed row. A run that stops leaves its row
    (interrupted or failed; or none, when even that cannot be written) and raises."""
    recipe = run.recipe
    restore_signals = _signals_interrupt()
    try:
        for epoch in range(run.state.epoch + 1, budget.points(recipe.train, run.steps_per_epoch)):  # or a budget's
            record = budget.train_point(run, epoch, reporter)
            if not math.isfinite(record["train_loss"]):
                run.diverged("training loss", record["train_loss"], epoch + 1)
            record |= run.validate()
            run.save(improved=run.state.add(record, recipe.train.select_metric))
            reporter.epoch({**record, "best_epoch": run.state.best_epoch})
            if run.state.patience_spent(recipe.train.patience):
                log(f"stopping early: no better val {recipe.train.select_metric} for {recipe.train.patience} epochs")
                break
        reporter.close()
        return run.finalize()
    except KeyboardInterrupt as e:
        distributed.on_sigterm(signal.SIG_IGN)  # a second SIGTERM (a launcher stopping all) must not cut the write
        by = e.signal_name if isinstance(e, Interrupted) else "the user (Ctrl-C)"
        _record_end(run, run.row("interrupted", ended_at=_now(),
                                 error=f"interrupted by {by}; continue with the same command and --resume"), reporter)
        raise
    except BaseException as e:
        distributed.on_sigterm(signal.SIG_IGN)
        known = as_results_error(e, run.results.root) if isinstance(e, OSError) else None
        _record_end(run, run.row("failed", ended_at=_now(), error=str(known) if known else f"{type(e).__name__}: {e}"),
                    reporter)
        raise
    finally:
        restore_signals()
        reporter.close()


def _record_end(run: Run, row: dict[str, Any], reporter: Reporter, commit: bool = False) -> None:
    """Write the run's final row (``commit``: the completed one, which takes the place of an earlier result), then
    tell the reporter: the row first, so a reporter never stands between a run and its result. A row that cannot
    be written (a full disk) takes this attempt's row away, so that no ``running`` row outlives the process. The
    row carries the run-level figure (``run_cost.py``), which the caller shows."""
    run.cost.close(row, run.device, run.amp)
    if commit:
        distributed.on_main(run.attempt.commit, row)
    else:
        try:
            distributed.on_main(run.attempt.write, row)
        except BaseException:  # the error that ended the run is the one to report
            distributed.on_main(run.attempt.withdraw)
            return
    reporter.finish(row)


def _signals_interrupt():
    """Turn SIGTERM into ``Interrupted`` while a run trains, so that it leaves an "interrupted" row and its last
    epoch checkpoint, as Ctrl-C does (naming the error of another process that stopped first, when several
    train the run); returns the function that restores the previous handler."""
    return distributed.on_sigterm(distributed.interrupt)
