"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, fed through the engine's Reporter protocol.

``medboost train/ablate --track NAME`` (repeatable; else ``$MEDBOOST_TRACK``, comma-separated) adds one tracker per
name beside the progress display (``Reporters``). Each logs the recipe at start, per epoch (step = the 0-based
epoch, as in the row's ``history_json`` and ``best_epoch``) ``train/loss``, ``train/lr``, ``train/epoch_seconds``
and ``val/*``, and at the end the row's ``test/*``, ``best/*`` and ``run/*`` numbers (``final_metrics``). The run
id is the tracker run's name; task, booster, backbone and seed are its tags.

Files go under the results folder unless the user's own variables say otherwise: ``tb/RUN_ID`` (TensorBoard),
``mlruns`` (MLflow's file store; ``$MLFLOW_TRACKING_URI`` wins), ``wandb`` (W&B, offline unless ``$WANDB_MODE``
is set; ``$WANDB_DIR``, ``$WANDB_PROJECT`` win).

The results row comes first: the engine writes it before ``finish`` reaches the trackers, and a tracker that
raises is switched off for the rest of the run with one warning line, so a tracker can never lose a result.

Resuming continues the tracker run of the same training attempt. An attempt is known by the row's
``started_at`` (kept across ``--resume``, new when a run starts over or is ``--force``-d); trackers read it,
with the epochs already done, from the "running" row the engine writes before ``start``:

- TensorBoard: the same folder; every start rewrites the history so far (``purge_step=0`` hides the older events
  from TensorBoard's readers), so the folder always shows the results' history once, whatever was logged before.
- W&B: the id ``RUN_ID-STARTED_AT`` with ``resume="allow"``. Online, the W&B run continues; offline, each start
  writes one more ``offline-run-*`` folder with that id, and ``wandb sync`` uploads them in order into one run.
- MLflow: the run tagged with this run id and ``started_at`` is set running again and continued.

A tracker run created for an attempt that already has epochs (``--track`` added on ``--resume``) gets those
epochs first, from the row's history. A continued W&B or MLflow run does not: an epoch is logged right after its
checkpoint is written, so only an interruption in the milliseconds between the two leaves a gap there.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .attempts import attempt_row
from .errors import ConfigError
from .recipes import Recipe
from .results import cell_id

TRACKERS = ("tensorboard", "wandb", "mlflow")
_MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_EPOCH_KEYS = {"train_loss": "train/loss", "lr": "train/lr", "seconds": "train/epoch_seconds"}
_FINAL_KEYS = {
    "test_acc": "test/acc", "test_auc": "test/auc", "val_acc": "best/val_acc", "val_auc": "best/val_auc",
    "best_epoch": "best/epoch", "epochs_done": "run/epochs_done", "params_total": "run/params_total",
    "params_trainable": "run/params_trainable", "train_seconds": "run/train_seconds",
    "images_per_second": "run/images_per_second", "peak_memory_mb": "run/peak_memory_mb",
}


def resolve_tracks(options: list[str]) -> list[str]:
    """The trackers asked for (``--track``, else ``$MEDBOOST_TRACK``; either may list names with commas), each
    checked to be importable now rather than after an epoch of training."""
    source, values = ("--track", options) if options else ("MEDBOOST_TRACK=", [os.environ.get("MEDBOOST_TRACK", "")])
    names = list(dict.fromkeys(n.strip().lower() for v in values for n in v.split(",") if n.strip()))
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"{source}{'' if source.endswith('=') else ' '}{name}: unknown tracker; choose "
                              f"{', '.join(TRACKERS)}")
        try:
            importlib.import_module(_MODULES[name])
        except ImportError:
            raise ConfigError(f"--track {name} needs `pip install medboost[{name}]`") from None
    return names


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """An epoch record's numbers under the trackers' names (``val_auc`` -> ``val/auc``); not the epoch indices."""
    out = {}
    for key, value in record.items():
        if key in ("epoch", "best_epoch") or not _is_number(value):
            continue
        out[_EPOCH_KEYS.get(key, key.replace("val_", "val/", 1) if key.startswith("val_") else key)] = float(value)
    return out


def final_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The final row's numbers (test metrics, best val, parameter counts, time, memory) that it has."""
    return {name: float(row[key]) for key, name in _FINAL_KEYS.items() if _is_number(row.get(key))}


def final_step(row: dict[str, Any]) -> int:
    """Where the final numbers go on an epoch axis: the best epoch, whose weights the test split scored."""
    return row["best_epoch"] if row.get("best_epoch") is not None else 0


def run_tags(recipe: Recipe) -> dict[str, str]:
    return {"task": recipe.task_info.short, "booster": recipe.booster.mode, "backbone": recipe.backbone.name,
            "seed": str(recipe.seed)}


def flat_config(recipe: Recipe) -> dict[str, Any]:
    """The recipe as ``section.key -> value`` (lists as JSON text): MLflow's params, TensorBoard's hparams."""
    out = {}
    for key, value in recipe.model_dump(mode="json").items():
        for sub, v in value.items() if isinstance(value, dict) else [(None, value)]:
            out[f"{key}.{sub}" if sub else key] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


# --------------------------------------------------------------------------------------------- trackers


class Tracker:
    """One tracker as a Reporter. Subclasses implement ``_open`` (start or continue the tracker run; True when
    it continues one), ``_log`` (numbers at a step), ``_final`` (the final row) and ``_end`` (close the run)."""

    name = "tracker"

    def __init__(self, recipe: Recipe, results_dir: Path, log=print):
        self.recipe, self.results_dir, self.log = recipe, Path(results_dir), log
        self.run_id = recipe.run_id()
        self.open = False

    def start(self, run_id: str, epochs: int, steps_per_epoch: int, first_epoch: int, unit: str = "epoch") -> None:
        row = attempt_row(self.results_dir, self.run_id) or {}  # the engine's "running" row: attempt, epochs so far
        self.started_at = row.get("started_at") or time.strftime("%Y-%m-%dT%H:%M:%S")
        history = [h for h in json.loads(row.get("history_json") or "[]") if h["epoch"] < first_epoch]
        continued = self._open(first_epoch)
        self.open = True
        if not continued:
            for record in history:
                self.epoch(record)

    def step(self, loss: float | None) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        self._log(epoch_metrics(record), record["epoch"])

    def close(self) -> None:
        pass

    def finish(self, row: dict[str, Any]) -> None:
        if self.open:
            self._final(row)
            self.end(row["status"])

    def end(self, status: str = "failed") -> None:
        """Close the tracker run, once (``Reporters`` also calls it after the tracker raised)."""
        if self.open:
            self.open = False
            self._end(status)

    def _open(self, first_epoch: int) -> bool:
        raise NotImplementedError

    def _log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _final(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def _end(self, status: str) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Event files in ``RESULTS/tb/RUN_ID`` (``tensorboard --logdir RESULTS/tb``), with the recipe as text and the
    run's hyperparameters and final metrics in TensorBoard's HPARAMS view."""

    name = "TensorBoard"
    HPARAMS = ("task", "seed", "backbone.name", "booster.mode", "booster.llm", "booster.layer", "booster.freeze",
               "booster.llm_init", "booster.lm_norm", "data.size", "data.resize", "train.epochs", "train.batch_size",
               "train.lr", "train.weight_decay")  # the HPARAMS view's columns: what a comparison of runs varies

    def _open(self, first_epoch: int) -> bool:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = self.results_dir / "tb" / self.run_id
        # purge_step=0: readers hide every earlier event of this folder; start() rewrites the history so far.
        self.writer = SummaryWriter(str(self.folder), purge_step=0)
        self.writer.add_text("recipe", "    " + json.dumps(self.recipe.model_dump(mode="json"), indent=1)
                             .replace("\n", "\n    "), 0)
        self.writer.add_text("tags", ", ".join(f"{k}: {v}" for k, v in run_tags(self.recipe).items()), 0)
        return False

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def _final(self, row: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = final_metrics(row)
        self._log(final, final_step(row))
        params = {"run_id": self.run_id, "status": row["status"], **{
            k: v for k, v in flat_config(self.recipe).items() if v is not None and k in self.HPARAMS}}
        for summary in hparams(params, {k: v for k, v in final.items() if k.startswith(("test/", "best/val"))}):
            self.writer.file_writer.add_summary(summary)

    def _end(self, status: str) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run named after the run id, grouped by configuration (all seeds of a cell), offline by default."""

    name = "W&B"

    def _open(self, first_epoch: int) -> bool:
        import wandb

        env = os.environ
        root = Path(env.get("WANDB_DIR") or self.results_dir)
        self.wandb_id = f"{self.run_id}-{self.started_at.replace('-', '').replace(':', '')[:15]}"
        # W&B's own folders (run-* online, offline-run-* offline) tell whether this attempt was logged before.
        before = any((root / "wandb").glob(f"*run-*-{self.wandb_id}"))
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=None if "WANDB_PROJECT" in env else "medboost", dir=str(root), id=self.wandb_id,
            name=self.run_id, group=cell_id(self.run_id), tags=[f"{k}:{v}" for k, v in run_tags(self.recipe).items()],
            config={**self.recipe.model_dump(mode="json"), "run_id": self.run_id,
                    "config_hash": self.recipe.config_hash()},
            resume="allow", mode=None if "WANDB_MODE" in env else "offline",
            settings=wandb.Settings(console="off", reinit="create_new",
                                    **({} if "WANDB_SILENT" in env else {"silent": True})),
        )
        if not before:
            self.log(f"W&B: offline run in {Path(self.run.dir).parent} (upload it with `wandb sync` and that "
                     f"folder)" if self.run.offline else f"W&B: {self.run.url}")
        return before or bool(self.run.resumed)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def _final(self, row: dict[str, Any]) -> None:
        self.run.summary.update({**final_metrics(row), "status": row["status"],
                                 **({"error": row["error"]} if row.get("error") else {})})

    def _end(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


class MlflowTracker(Tracker):
    """An MLflow run named after the run id, in the experiment ``medboost`` (``$MLFLOW_EXPERIMENT_NAME``) of the
    file store ``RESULTS/mlruns`` (``$MLFLOW_TRACKING_URI``): params = the flat recipe, the recipe as
    ``recipe.json``, tags = task/booster/backbone/seed and ``medboost.*``."""

    name = "MLflow"

    def _open(self, first_epoch: int) -> bool:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow >= 3.x refuses the file store unless asked for it ("maintenance mode"); we do ask: a folder per
            # run is safe for parallel runs writing one results folder (a cluster's array job), sqlite is not.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (self.results_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "medboost"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except MlflowException:  # another process created it meanwhile
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        found = self.client.search_runs(
            [experiment_id], f"tags.`medboost.run_id` = '{self.run_id}' and "
                             f"tags.`medboost.started_at` = '{self.started_at}'",
            order_by=["attribute.start_time DESC"], max_results=1)
        if found:
            self.mlflow_id = found[0].info.run_id
            self.client.update_run(self.mlflow_id, status="RUNNING")
            return True
        tags = {**run_tags(self.recipe), "medboost.run_id": self.run_id, "medboost.cell_id": cell_id(self.run_id),
                "medboost.started_at": self.started_at, "medboost.config_hash": self.recipe.config_hash()}
        self.mlflow_id = self.client.create_run(experiment_id, run_name=self.run_id, tags=tags).info.run_id
        params = [Param(k, str(v)) for k, v in flat_config(self.recipe).items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.mlflow_id, params=params[i : i + 100])
        self.client.log_dict(self.mlflow_id, self.recipe.model_dump(mode="json"), "recipe.json")
        return False

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.mlflow_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def _final(self, row: dict[str, Any]) -> None:
        self._log(final_metrics(row), final_step(row))
        self.client.set_tag(self.mlflow_id, "medboost.status", row["status"])
        if row.get("error"):
            self.client.set_tag(self.mlflow_id, "medboost.error", str(row["error"])[:5000])

    def _end(self, status: str) -> None:
        status = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.mlflow_id, status)


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


# ------------------------------------------------------------------------------------------- fan-out


class Reporters:
    """The progress display (if any) and the trackers as one Reporter. A tracker that raises is switched off for
    the rest of the run, with one warning line; training and the results row never depend on a tracker."""

    def __init__(self, progress, trackers: list[Tracker], warn=print):
        self.progress, self.trackers, self.warn = progress, list(trackers), warn

    def _each(self, method: str, *args: Any) -> None:
        """Call ``method`` on the trackers, then on the progress display (whose printing a Ctrl-C may cut)."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:
                self.trackers.remove(tracker)
                self.warn(f"warning: {tracker.name} tracking of {tracker.run_id} stopped ({_one_line(e)}); training "
                          f"and its results row go on without it")
                try:
                    tracker.end()
                except Exception:
                    pass
        if self.progress is not None:
            getattr(self.progress, method)(*args)

    def start(self, run_id: str, epochs: int, steps_per_epoch: int, first_epoch: int, unit: str = "epoch") -> None:
        self._each("start", run_id, epochs, steps_per_epoch, first_epoch, unit)

    def step(self, loss: float | None) -> None:  # per batch: the progress display only
        if self.progress is not None:
            self.progress.step(loss)

    def epoch(self, record: dict[str, Any]) -> None:
        self._each("epoch", record)

    def close(self) -> None:
        self._each("close")

    def finish(self, row: dict[str, Any]) -> None:
        self._each("finish", row)


def make_reporter(recipe: Recipe, results_dir: Path, tracks: list[str], progress=None, log=print):
    """``progress`` alone when no tracker is asked for, else ``Reporters`` over it and one tracker per name."""
    if not tracks:
        return progress
    return Reporters(progress, [TRACKER_CLASSES[name](recipe, results_dir, log) for name in tracks], warn=log)
