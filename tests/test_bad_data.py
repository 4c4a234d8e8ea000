"""Bad data files as a class: each one stops `medboost train` with one line and exit code 3 (DataError), before a
model is built or a row written, and a results folder that already holds other runs keeps them byte for byte.

The files are MedMNIST-format npz files written by the tests (conftest.write_medmnist), then damaged one way each,
and trained on with ``data.verify=false`` (the user's own data): the checks must not depend on the MD5 check.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import medboost_cli.download as download_mod
import medboost_cli.engine as engine_mod
from medboost_cli.data import load_dataset
from medboost_cli.errors import DataError
from medboost_cli.results import new_row, write_row
from medboost_cli.tasks import resolve_task

from .conftest import write_medmnist
from .test_cli import assert_one_line_error, run


def _edit(path: Path, **changes) -> None:
    """Rewrite the npz at ``path`` with some of its arrays replaced."""
    with np.load(path) as z:
        arrays = dict(z)
    arrays.update(changes)
    np.savez(path, **arrays)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return dict(z)


def _relabel(split: str, change: Callable[[np.ndarray], np.ndarray]):
    return lambda path, mp: _edit(path, **{f"{split}_labels": change(_arrays(path)[f"{split}_labels"])})


def _reshape_images(split: str, change: Callable[[np.ndarray], np.ndarray]):
    return lambda path, mp: _edit(path, **{f"{split}_images": change(_arrays(path)[f"{split}_images"])})


def _nan_label(y):
    y = y.astype(np.float32)
    y[3, 0] = np.nan  # np.int64 of NaN is -2**63: a silent, wrong class without the check
    return y


def _half_label(y):
    y = y.astype(np.float64)
    y[5, 0] = 0.5
    return y


def _single_class(y):
    return np.zeros_like(y)


def _empty(split: str):
    def damage(path, mp):
        arrays = _arrays(path)
        _edit(path, **{f"{split}_images": arrays[f"{split}_images"][:0], f"{split}_labels": arrays[f"{split}_labels"][:0]})

    return damage


def _folder(path, mp):
    path.unlink()
    path.mkdir()
    (path / "something").write_text("x")


def _unreadable(path, mp):
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: refuse as the OS refuses every other user
        def refusing(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return open(file, *args, **kwargs)

        mp.setattr(download_mod, "open", refusing, raising=False)


def _closed_folder(path, mp):
    path.parent.chmod(0)
    if os.access(path.parent, os.X_OK):  # root looks into any folder: refuse as the OS refuses every other user
        exists = Path.exists

        def refusing(self):
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return exists(self)

        mp.setattr(Path, "exists", refusing)


def _rng_images(*shape):
    return np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)


# (task, damage, fragments the one line must contain besides the file's path)
CASES = [
    pytest.param("breast", _relabel("train", lambda y: y[:-1]), ["split 'train' has 48 images but 47 labels"],
                 id="fewer-labels-than-images"),
    pytest.param("breast", _relabel("val", _nan_label), ["val_labels has 1 NaN or infinite value", "row 3: [nan]"], id="nan-label"),
    pytest.param("breast", _relabel("test", _half_label), ["test_labels has 1 fractional value", "row 5"],
                 id="fractional-label"),
    pytest.param("breast", _relabel("test", lambda y: y.astype(np.int8) - 1),
                 ["test_labels has values in [-1, 0]", "breastmnist allows 0..1"], id="label-out-of-range"),
    pytest.param("retina", _relabel("train", lambda y: y + 3), ["train_labels has values in [3, 7]",
                                                                "retinamnist allows 0..4"], id="class-out-of-range"),
    pytest.param("breast", _reshape_images("train", lambda x: np.repeat(x[..., None], 3, axis=-1)),
                 ["train_images has shape (48, 28, 28, 3)", "3 channels but breastmnist's are grayscale"],
                 id="rgb-under-grayscale"),
    pytest.param("derma", _reshape_images("val", lambda x: np.moveaxis(x, -1, 1)),
                 ["val_images has shape (16, 3, 28, 28)", "channel axis comes first", "np.moveaxis"],
                 id="channels-first"),
    pytest.param("derma", _reshape_images("train", lambda x: x[..., 0]),
                 ["train_images", "grayscale but dermamnist's are RGB"], id="grayscale-under-rgb"),
    pytest.param("breast", _reshape_images("train", lambda x: _rng_images(len(x), 28, 28, 28)),
                 ["train_images has shape (48, 28, 28, 28)", "3D volumes, but breastmnist is a 2D task", "adrenal3d"],
                 id="volume-under-2d-task"),
    pytest.param("adrenal3d", _reshape_images("test", lambda x: x[:, 0]),
                 ["test_images has shape (24, 28, 28)", "2D images, but adrenalmnist3d is a 3D task", "breast"],
                 id="images-under-3d-task"),
    pytest.param("breast", _reshape_images("train", lambda x: x.astype(np.float32) / 255),
                 ["train_images has shape (48, 28, 28) and dtype float32", "astype(np.uint8)"], id="float-images"),
    pytest.param("breast", _empty("train"), ["split 'train' is empty"], id="empty-train"),
    pytest.param("breast", _empty("val"), ["split 'val' is empty"], id="empty-val"),
    pytest.param("breast", _empty("test"), ["split 'test' is empty"], id="empty-test"),
    pytest.param("breast", _relabel("val", _single_class),
                 ["val split all 16 samples are class 0", "val AUC is undefined", "two classes", "train.select_metric=acc"],
                 id="single-class-val"),
    pytest.param("chestmnist", _relabel("val", lambda y: np.zeros_like(y)),
                 ["none of its 14 labels has both values", "val needs some label with both", "train.select_metric=acc"], id="multilabel-val-one-value"),
    pytest.param("breast", _folder, ["is a folder, not a .npz file"], id="folder-not-file"),
    pytest.param("breast", _unreadable, ["cannot read it (Permission denied)", "chmod u+r"], id="unreadable-file"),
    pytest.param("breast", _closed_folder, ["cannot look for it (Permission denied)", "--data-dir"],
                 id="closed-data-folder"),
    pytest.param("breast", lambda path, mp: _edit(path, val_labels=np.array(1)),
                 ["val_labels must be arrays with one entry per sample"], id="scalar-labels"),
]


@pytest.mark.parametrize(("task", "damage", "fragments"), CASES)
def test_bad_data_is_one_line_exit_3_and_loses_nothing(tmp_path, monkeypatch, task, damage, fragments):
    data, results = tmp_path / "data", tmp_path / "results"
    path = write_medmnist(data, task)
    other = new_row(run_id="breast-vit-mini-none-0123456789-s0", status="completed", task="breast", seed=0,
                    test_acc=0.8, test_auc=0.9, test_labels=[[0], [1]], test_scores=[[0.7, 0.3], [0.2, 0.8]])
    kept = write_row(results, other)
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    built = []
    monkeypatch.setattr(engine_mod, "build_model", lambda *a, **k: built.append(a) or pytest.fail("model built"))
    damage(path, monkeypatch)

    r = run("train", task, "--data-dir", data, "--results-dir", results, "--preset", "cpu", "--epochs", "1",
            "--quiet", "--set", "data.verify=false")

    assert_one_line_error(r, str(path), *fragments, code=3)
    assert built == []  # refused before any model was built
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before  # no row, checkpoint or temp file
    assert kept in before


def test_single_class_val_is_fine_when_selecting_by_accuracy_or_loss(tmp_path):
    """The val check is about AUC selection only: accuracy and loss are defined on one class; evaluation and
    Grad-CAM (no selection) accept the file too."""
    path = write_medmnist(tmp_path, "breast")
    _relabel("val", _single_class)(path, None)
    breast = resolve_task("breast")
    for metric in ("acc", "loss", None):
        assert load_dataset(breast, 28, tmp_path, verify=False, select_metric=metric).splits["val"].labels.sum() == 0
    with pytest.raises(DataError, match="val AUC is undefined"):
        load_dataset(breast, 28, tmp_path, verify=False, select_metric="auc")


def test_whole_float_labels_and_a_trailing_grayscale_channel_are_accepted(tmp_path):
    """What the checks must not refuse: labels stored as floats holding whole numbers, (N, H, W, 1) images, and a
    multi-label val split where only some labels have both values (metrics.auc averages over those)."""
    path = write_medmnist(tmp_path, "breast")
    arrays = _arrays(path)
    _edit(path, train_labels=arrays["train_labels"].astype(np.float32), train_images=arrays["train_images"][..., None])
    ds = load_dataset(resolve_task("breast"), 28, tmp_path, verify=False, select_metric="auc")
    assert ds.splits["train"].images.shape == (48, 1, 28, 28)
    assert ds.splits["train"].labels.tolist() == arrays["train_labels"].astype(np.int64).tolist()
    chest = write_medmnist(tmp_path, "chestmnist")
    y = np.zeros_like(_arrays(chest)["val_labels"])
    y[0, 4] = 1  # label 4 has both values in val; the other 13 have only zeros
    _edit(chest, val_labels=y)
    assert load_dataset(resolve_task("chestmnist"), 28, tmp_path, verify=False, select_metric="auc")
