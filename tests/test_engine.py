"""End-to-end training on small MedMNIST-format files: selection on val, one test pass, resume, evaluate."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from medboost_cli import metrics
from medboost_cli.engine import (SilentReporter, evaluate_run, make_optimizer, make_schedule, make_transforms, train,
                                 train_step)
from medboost_cli.errors import Interrupted, MedboostError
from medboost_cli.models import build_model
from medboost_cli.recipes import load_recipe
from medboost_cli.results import COLUMNS, ResultsDir, load_results

from .conftest import TINY_SETS, write_medmnist


def tiny(task="breast", mode="rllm", *sets):
    return load_recipe(task, preset="cpu", flags=[("--booster", "booster.mode", mode)], sets=TINY_SETS + list(sets))


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def rllm_run(tmp_path_factory):
    """One tiny rllm run (2 epochs), shared by the tests that read its row and checkpoints; a test that changes
    a file works on its own copy (``copied``)."""
    root = tmp_path_factory.mktemp("rllm-run")
    write_medmnist(root / "medmnist", "breast")
    row = train(tiny(), root / "medmnist", root / "results", log=quiet)
    return root / "medmnist", root / "results", row


def copied(run, tmp_path):
    data_dir, results_dir, row = run
    return data_dir, Path(shutil.copytree(results_dir, tmp_path / "results")), row


def test_train_writes_a_complete_row_and_selects_on_val(rllm_run):
    data_dir, results_dir, row = rllm_run
    assert row["status"] == "completed" and row["epochs_done"] == 2
    df = load_results(results_dir)
    assert len(df) == 1 and list(df.columns) == COLUMNS
    r = df.iloc[0]
    assert (r.run_id, r.task, r.flag, r.booster, r.llm, r.layer, r.frozen, r.llm_init) == (
        row["run_id"], "breast", "breastmnist", "rllm", "minilm", 5, True, "pretrained")
    history = json.loads(r.history_json)
    assert [h["epoch"] for h in history] == [0, 1]
    best = max(range(2), key=lambda e: (history[e]["val_auc"], -e))
    assert r.best_epoch == best and r.val_auc == history[best]["val_auc"] and r.val_acc == history[best]["val_acc"]
    assert r.params_trainable < r.params_total  # the frozen layer counts in total only
    assert r.train_seconds == pytest.approx(sum(h["seconds"] for h in history))
    assert r.images_per_second == pytest.approx(48 * 2 / r.train_seconds) and r.peak_memory_mb > 0
    assert json.loads(r.config_json)["booster"]["mode"] == "rllm" and "torch" in json.loads(r.versions_json)
    # the stored test scores reproduce the stored test metrics
    scores, labels = np.array(r.test_scores.tolist()), np.array(r.test_labels.tolist())
    assert metrics.evaluate(labels, scores, "binary-class") == {"acc": r.test_acc, "auc": r.test_auc}


def test_test_split_never_chooses(data_dir, results_dir, tmp_path):
    """Scrambling the test labels changes test metrics but not the chosen epoch or any val number."""
    a = train(tiny("breast", "none"), data_dir, results_dir, log=quiet)
    other = tmp_path / "scrambled"
    write_medmnist(other, "breast")
    with np.load(other / "breastmnist.npz") as z:
        arrays = dict(z)
    arrays["test_labels"] = 1 - arrays["test_labels"]
    np.savez(other / "breastmnist.npz", **arrays)
    b = train(tiny("breast", "none"), other, tmp_path / "r2", log=quiet)
    assert (a["best_epoch"], a["val_auc"], a["val_acc"]) == (b["best_epoch"], b["val_auc"], b["val_acc"])
    assert a["test_acc"] == pytest.approx(1 - b["test_acc"])


def test_checkpoint_holds_trainable_weights_and_the_frozen_hash_only(rllm_run):
    _, results_dir, row = rllm_run
    paths = ResultsDir(results_dir)
    ckpt = torch.load(paths.best(row["run_id"]), weights_only=True)
    assert not any(k.startswith("booster.lm.") for k in ckpt["trainable"])
    assert "booster.encode.weight" in ckpt["trainable"] and ckpt["frozen_sha256"] == row["frozen_sha256"]
    assert ckpt["epoch"] == row["best_epoch"] and len(row["frozen_sha256"]) == 64
    assert not paths.last(row["run_id"]).exists()  # optimizer state is dropped once the run is complete


class InterruptAfter(SilentReporter):
    """A reporter that interrupts training after ``epochs`` epochs (after their checkpoint was written)."""

    def __init__(self, epochs):
        self.epochs = epochs

    def epoch(self, record):
        if record["epoch"] + 1 >= self.epochs:
            raise KeyboardInterrupt


def test_resume_gives_the_same_result_as_an_uninterrupted_run(data_dir, tmp_path):
    recipe = tiny("breast", "rllm", "train.epochs=3", "train.warmup_epochs=1", "backbone.drop_path=0.2")
    full = train(recipe, data_dir, tmp_path / "full", log=quiet)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, data_dir, tmp_path / "cut", reporter=InterruptAfter(2), log=quiet)
    assert load_results(tmp_path / "cut").iloc[0].status == "interrupted"
    logs = []
    resumed = train(recipe, data_dir, tmp_path / "cut", resume=True, log=logs.append)
    assert "resuming" in logs[0] and "after epoch 2 of 3" in logs[0]
    for key in ("best_epoch", "val_auc", "val_acc", "test_auc", "test_acc", "epochs_done"):
        assert resumed[key] == full[key], key
    assert np.array_equal(np.array(resumed["test_scores"]), np.array(full["test_scores"]))
    # the validation threshold: the kept scores of the selected epoch, or (resumed after it) that epoch's weights'
    assert resumed["test_panel_json"] == full["test_panel_json"]
    logs.clear()
    again = train(recipe, data_dir, tmp_path / "cut", resume=True, log=logs.append)  # completed: nothing to do
    assert "already completed" in logs[0] and again["test_auc"] == full["test_auc"]


class TerminateAfter(InterruptAfter):
    """Sends this process SIGTERM (a cluster's preemption) after ``epochs`` epochs."""

    def epoch(self, record):
        if record["epoch"] + 1 >= self.epochs:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_leaves_an_interrupted_row_and_a_run_that_resumes(data_dir, tmp_path):
    recipe = tiny("breast", "none", "train.epochs=3")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM"):
        train(recipe, data_dir, tmp_path, reporter=TerminateAfter(1), log=quiet)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the run's only while it trains
    row = load_results(tmp_path).iloc[0]
    assert row.status == "interrupted" and "SIGTERM" in row.error and "--resume" in row.error
    assert row.epochs_done == 1
    resumed = train(recipe, data_dir, tmp_path, resume=True, log=quiet)
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 3


def test_resume_refuses_a_changed_configuration(data_dir, results_dir):
    recipe = tiny("breast", "none", "train.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        train(recipe, data_dir, results_dir, reporter=InterruptAfter(1), log=quiet)
    last = ResultsDir(results_dir).last(recipe.run_id())
    ckpt = torch.load(last, weights_only=True)
    ckpt["config_hash"] = "00000000"
    torch.save(ckpt, last)
    with pytest.raises(MedboostError, match="saved with another configuration"):
        train(recipe, data_dir, results_dir, resume=True, log=quiet)


def test_a_completed_run_is_never_overwritten_without_force(rllm_run, tmp_path):
    data_dir, results_dir, row = copied(rllm_run, tmp_path)
    path = ResultsDir(results_dir).row(row["run_id"])
    before = path.read_bytes()
    with pytest.raises(MedboostError, match=r"already completed \(test AUC .*use --force"):
        train(tiny(), data_dir, results_dir, log=quiet)
    assert path.read_bytes() == before  # nothing was written, not even a "running" row
    assert train(tiny(), data_dir, results_dir, resume=True, log=quiet)["test_scores"] == row["test_scores"]
    again = train(tiny(), data_dir, results_dir, force=True, log=quiet)  # asked for: trained and replaced
    assert again["status"] == "completed" and again["started_at"] >= row["started_at"]
    assert again["test_auc"] == pytest.approx(row["test_auc"])  # the same seeds give the same run


def test_evaluate_reproduces_recorded_metrics(rllm_run):
    data_dir, results_dir, row = rllm_run
    for split in ("val", "test"):
        out = evaluate_run(row["run_id"][:30], results_dir, data_dir, split)
        assert (out["recorded_acc"], out["recorded_auc"]) == (row[f"{split}_acc"], row[f"{split}_auc"])
        assert out["acc"] == pytest.approx(out["recorded_acc"]) and out["auc"] == pytest.approx(out["recorded_auc"])


def test_evaluate_detects_a_different_frozen_layer(rllm_run, tmp_path):
    data_dir, results_dir, row = copied(rllm_run, tmp_path)
    path = ResultsDir(results_dir).best(row["run_id"])
    ckpt = torch.load(path, weights_only=True)
    ckpt["frozen_sha256"] = "f" * 64
    torch.save(ckpt, path)
    with pytest.raises(MedboostError, match="frozen LM layer differs"):
        evaluate_run(row["run_id"], results_dir, data_dir)


def test_unknown_run_is_a_clear_error(results_dir):
    with pytest.raises(MedboostError, match="no run 'nope'"):
        evaluate_run("nope", results_dir, results_dir)


def test_a_completed_row_has_the_metric_panel_and_the_manifest(rllm_run):
    from medboost_cli.download import md5sum
    from medboost_cli.panel import panel

    data_dir, results_dir, row = rllm_run
    stored = json.loads(row["test_panel_json"])
    scores, labels = np.array(row["test_scores"]), np.array(row["test_labels"])
    recomputed = panel(labels, scores, "binary-class")  # without validation scores: no threshold
    assert stored["mcc"] == pytest.approx(recomputed["mcc"]) == pytest.approx(row["test_mcc"])
    assert row["test_balanced_acc"] == pytest.approx(recomputed["balanced_acc"])
    assert row["test_ece"] == pytest.approx(recomputed["ece"]) and stored["ece_bins"] == 15
    assert stored["sens_at_0.5"] == pytest.approx(row["test_sens"])
    assert 0 <= stored["val_threshold"] <= 1 and stored["sens_at_val_threshold"] is not None
    manifest = json.loads(row["manifest_json"])
    assert manifest["data"] == {"file": "breastmnist.npz", "md5": md5sum(data_dir / "breastmnist.npz")}
    assert manifest["lm"]["frozen_sha256"] == row["frozen_sha256"] and manifest["lm"]["source"] == row["llm"]
    assert manifest["medboost"]["commit"] == row["git_commit"] and "torch" in manifest["versions"]
    assert manifest["machine"]["device"] == row["device"] and manifest["machine"]["cpu"]
    assert load_results(results_dir).iloc[0].manifest_json == row["manifest_json"]


@pytest.mark.parametrize("task", ["derma", "chestmnist", "retina"])
def test_other_task_types_train(tmp_path, task):
    write_medmnist(tmp_path / "d", task)
    row = train(tiny(task, "mlp", "train.epochs=1"), tmp_path / "d", tmp_path / "r", log=quiet)
    assert row["status"] == "completed" and row["booster"] == "mlp"
    width = 14 if task == "chestmnist" else {"derma": 7, "retina": 5}[task]
    scores, labels = np.array(row["test_scores"]), np.array(row["test_labels"])
    assert scores.shape == (24, width) and labels.shape == (24, width if task == "chestmnist" else 1)
    info = load_recipe(task).task_info
    assert metrics.evaluate(labels, scores, info.task_type) == {"acc": row["test_acc"], "auc": row["test_auc"]}
    stored = json.loads(row["test_panel_json"])
    assert ("qwk" in stored) == (task == "retina") and "val_threshold" in stored["not_applicable"]
    assert len(stored["recall_per_class"]) == width


def test_load_results_gathers_runs(data_dir, results_dir):
    rows = {mode: train(tiny("breast", mode, "train.epochs=1"), data_dir, results_dir, log=quiet)
            for mode in ("none", "out")}
    running = pq.read_table(results_dir / "runs" / f"{rows['none']['run_id']}.parquet").to_pandas()
    running[["run_id", "status"]] = ["breast-still-running", "running"]  # a run that has not finished
    running.to_parquet(results_dir / "runs" / "breast-still-running.parquet")
    df = load_results(results_dir, columns=["run_id", "booster", "test_auc"], status="completed")
    assert list(df.columns)[:3] == ["run_id", "booster", "test_auc"] and set(df.status) == {"completed"}
    assert sorted(zip(df.booster, df.run_id, df.test_auc)) == [
        (mode, r["run_id"], r["test_auc"]) for mode, r in sorted(rows.items())]
    assert sorted(load_results(results_dir).status) == ["completed", "completed", "running"]
    assert load_results(results_dir / "empty").empty


def test_schedule_warms_up_then_decays():
    recipe = tiny("breast", "none", "train.epochs=10", "train.warmup_epochs=2", "train.lr=1e-3", "train.min_lr=1e-5")
    model = build_model(recipe, recipe.task_info).model
    opt = make_optimizer(model, recipe)
    sched = make_schedule(opt, recipe, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(1e-5, abs=2e-6)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])


def test_adamw_is_fused_on_cpu_and_steps_as_the_reference_loop():
    """The optimizer is torch's fused AdamW on CPU (one kernel over a group instead of a Python loop of kernels per
    tensor); from the same weights and gradients, its step equals the default implementation's to fp32 rounding."""
    recipe = tiny("breast", "none")
    model = build_model(recipe, recipe.task_info).model
    fused = make_optimizer(model, recipe)
    assert fused.defaults["fused"] is True
    reference = build_model(recipe, recipe.task_info).model
    loop = torch.optim.AdamW([{"params": [dict(reference.named_parameters())[n] for n in names],
                               "weight_decay": g["weight_decay"]}
                              for g, names in zip(fused.param_groups, _group_names(model, fused))], lr=recipe.train.lr)
    assert not loop.defaults["fused"] and not loop.defaults["foreach"]  # the loop over tensors, torch's CPU default
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # the same gradients in both (a backward pass would leave the key bias's zero gradient as
        # rounding noise, which Adam scales up to a full step in either implementation)
        for a, b in zip(model.parameters(), reference.parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("task, mode", [("breast", "rllm"), ("chestmnist", "none")])
def test_micro_batches_give_the_whole_batchs_loss_and_gradient(task, mode):
    """train.micro_batch: chunks of 3, 3 and 2 of a batch of 8, each weighted by its share, give the loss and the
    (clipped) gradient of one pass over the batch, with the same augmentation; label smoothing and multi-label
    losses included. (A conv stem's BatchNorm would normalise each chunk by its own statistics: patch stem.) In
    fp32, F_L's storage included: a bf16 F_L rounds a chunk's matmul differently from the batch's (7e-3 relative,
    bf16's own rounding), which test_distributed's bf16 case bounds instead."""
    recipe = tiny(task, mode, "backbone.stem=patch", "backbone.drop_path=0", "train.label_smoothing=0.1",
                  "train.grad_clip=0.5", "train.precision=fp32", "booster.dtype=fp32")
    model = build_model(recipe, recipe.task_info).model.train()
    transform = make_transforms(recipe, model.backbone)[0]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, recipe.task_info.n_channels, 28, 28), generator=g, dtype=torch.uint8)
    width = recipe.task_info.n_classes if recipe.task_info.multilabel else 1
    labels = torch.randint(0, 2, (8, width), generator=g)
    sgd = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)  # leaves weights as they are
    results = []
    for micro in (None, 3):
        loss = train_step(model, sgd, images, labels, transform, torch.Generator().manual_seed(1), None,
                          recipe.task_info.task_type, 0.1, 0.5, micro_batch=micro)
        results.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (whole, grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert grads.keys() == chunked_grads.keys() and len(grads) > 4
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert float(torch.cat([g.flatten() for g in grads.values()]).norm()) == pytest.approx(0.5, rel=1e-4)  # clipped


def test_micro_batch_none_keeps_the_run_ids_from_before_it_existed():
    epoch_cpu = ["train.steps=null", "train.val_subset=null"]  # the CPU preset before its step budget
    assert load_recipe("breast", preset="cpu", sets=epoch_cpu).run_id() == "breast-vit-mini-rllm-68150a46-s0"
    assert load_recipe("derma").run_id() == "derma-vit-s-rllm-fcd63a02-s0"
    assert load_recipe("breast", preset="cpu", sets=["train.micro_batch=8"]).config_hash() != "68150a46"


def _group_names(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]


TINY_3D = ["data.verify=false", "backbone.dim=32", "backbone.depth=1", "backbone.heads=2", "backbone.dim_head=16",
           "train.epochs=1", "train.batch_size=8", "train.warmup_epochs=0"]


@pytest.mark.parametrize("backbone, site", [("vit3d", None), ("vivit-s", None), ("vivit-m", "spatial")])
def test_3d_end_to_end_on_small_volumes(tmp_path, backbone, site):
    write_medmnist(tmp_path / "d", "adrenal3d", n=(16, 8, 8))
    sets = TINY_3D + (["backbone.temporal_depth=1"] if backbone.startswith("vivit") else [])
    sets += [f"backbone.booster_site={site}"] if site else []
    recipe = load_recipe("adrenal3d", preset="cpu", flags=[("--backbone", "backbone.name", backbone)], sets=sets)
    row = train(recipe, tmp_path / "d", tmp_path / "r", log=quiet)
    assert row["status"] == "completed" and row["backbone"] == backbone and row["booster"] == "rllm"
    assert np.array(row["test_scores"]).shape == (8, 2)
    out = evaluate_run(row["run_id"], tmp_path / "r", tmp_path / "d", "test")
    assert out["auc"] == pytest.approx(row["test_auc"])


def test_3d_backbone_follows_the_data_size(tmp_path):
    recipe = load_recipe("adrenal3d", preset="cpu", sets=TINY_3D + ["data.size=64", "backbone.patch_size=8"])
    model = build_model(recipe, recipe.task_info).model
    assert model.backbone.input_size == 64 and model.backbone.n_tokens == 8**3 + 1
