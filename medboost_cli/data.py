"""MedMNIST data in memory: the npz arrays of a task's three splits (or a cohort file's fold), each checked, as uint8
tensors (N, C, H, W) or (N, C, D, H, W) that move to the training device whole.

Finding, hashing and downloading the files is download.py's; the batch transforms on the device (resize, augment,
normalise) are transforms.py's. No per-image Python work, no PIL, no JPEG folders.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .download import data_dir_from, download, md5sum, open_data_file
from .errors import DataError, MedboostError
from .npz_arrays import read_arrays
from .tasks import SHORT_NAMES, Task
from .transforms import BatchTransform

__all__ = [  # with the names it takes from download.py and transforms.py, which its importers use from here
    "SPLITS", "BatchTransform", "Dataset", "Split", "data_dir_from", "dataset_path", "download", "load_dataset",
    "md5sum",
]

SPLITS = ("train", "val", "test")


# -------------------------------------------------------------------------------------------------- load


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W) or (N, C, D, H, W)
    labels: torch.Tensor  # int64, (N, L): L = 1 except for multi-label tasks

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Dataset:
    task: Task
    size: int
    path: Path
    verified: bool  # MD5 and split sizes checked against medmnist's INFO
    splits: dict[str, Split]

    @property
    def channels(self) -> int:
        return self.splits["train"].images.shape[1]

    def to(self, device: torch.device) -> Dataset:
        moved = {k: Split(s.images.to(device), s.labels.to(device)) for k, s in self.splits.items()}
        return Dataset(self.task, self.size, self.path, self.verified, moved)


def dataset_path(task: Task, size: int, data_dir: Path) -> Path:
    """The file the task's data is in: MedMNIST's under ``data_dir``, a cohort file where it is."""
    return task.cohort.path if task.cohort is not None else data_dir / task.filename(size)


def load_dataset(task: Task, size: int, data_dir: Path, verify: bool = True, select_metric: str | None = None) -> Dataset:
    """Read all three splits of ``task`` at ``size`` from ``data_dir`` into memory.

    ``verify`` checks the file's MD5 and the split sizes against medmnist's INFO; switch it off only for data
    you made yourself (subsets, synthetic files). Everything else is always checked, so that a bad file stops here,
    before a model is built or a results row written, with one message naming the file, the array and the problem:
    missing or unreadable file, missing arrays, image and label counts that differ, an empty split, image layout
    (rank, size, channels, dtype) against the task, labels that are not whole numbers in the task's range.

    ``select_metric`` is the validation metric the caller selects epochs by: with ``"auc"`` the val split must have
    at least two classes (for a multi-label task: some label with both values), since AUC is undefined otherwise
    and every epoch would tie; ``None`` (evaluation, Grad-CAM) skips that check.

    A cohort task (a file from ``medboost prepare dicom``) is split into its fold's patient-disjoint train, val
    and test parts (folds.fold_splits) and checked the same way; ``data_dir`` and ``verify`` do not apply.
    """
    if task.cohort is not None:
        return _cohort_dataset(task, size, select_metric)
    path = dataset_path(task, size, data_dir)
    try:
        present = path.exists()
    except OSError as e:  # a folder without search permission: Path.exists() raises instead of saying False
        raise DataError(f"{path}: cannot look for it ({e.strerror}); give your user access to {data_dir} or point "
                        f"--data-dir elsewhere") from None
    if not present:
        raise DataError(
            f"data file not found: {path}; run `medboost download {task.short} --size {size} --data-dir {data_dir}` "
            f"or point --data-dir / $MEDBOOST_DATA at a folder that has {path.name}"
        )
    if verify:
        got, expected = md5sum(path), task.md5(size)
        if got != expected:
            raise DataError(
                f"{path}: MD5 {got} does not match medmnist's {expected} (corrupt, truncated or another version); "
                f"delete it and run `medboost download {task.short} --size {size}`"
            )
    return _checked_dataset(_read_npz(path), task, size, path, verify, select_metric)


def _cohort_dataset(task: Task, size: int, select_metric: str | None) -> Dataset:
    from .folds import fold_splits  # scikit-learn, for cohort runs only

    c = task.cohort
    if c.k is None:
        raise DataError(f"{c.path}: a cohort file is split into folds; give the run --folds K (data.folds)")
    parts = fold_splits(c.path, c.k, c.fold, c.seed, c.val_fraction)
    arrays = {f"{split}_{kind}": part[i] for split, part in parts.items() for i, kind in enumerate(("images", "labels"))}
    return _checked_dataset(arrays, task, size, c.path, False, select_metric)


def _checked_dataset(arrays: dict[str, np.ndarray], task: Task, size: int, path: Path, verify: bool,
                     select_metric: str | None) -> Dataset:
    """The Dataset of ``{split}_images`` and ``{split}_labels`` arrays, each checked (``load_dataset``)."""
    splits = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim == 0 or labels.ndim == 0:
            raise DataError(f"{path}: {split}_images and {split}_labels must be arrays with one entry per sample, "
                            f"not single values (shapes {images.shape} and {labels.shape})")
        if len(images) != len(labels):
            raise DataError(f"{path}: split '{split}' has {len(images)} images but {len(labels)} labels; every image "
                            f"needs one label row")
        if len(images) == 0:
            raise DataError(f"{path}: split '{split}' is empty; train, val and test each need samples (train to fit, "
                            f"val to choose the epoch, test to score once)")
        if verify and len(images) != task.n_samples[split]:
            raise DataError(
                f"{path}: split '{split}' has {len(images)} images but medmnist's INFO for {task.flag} says "
                f"{task.n_samples[split]}; the file is not the official one (use --set data.verify=false for your own data)"
            )
        splits[split] = Split(_images_tensor(images, task, size, path, split), _labels_tensor(labels, task, path, split))
    if select_metric == "auc":
        _check_auc_selectable(splits["val"].labels, task, path)
    if select_metric is not None:  # training: its result's test AUC must exist
        _check_test_auc(splits["test"].labels, task, path)
    return Dataset(task, size, path, verify, splits)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    try:
        with open_data_file(path) as f, np.load(f, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(f"{path}: not a MedMNIST file, missing arrays {', '.join(missing)}")
            return read_arrays(npz, keys, path)
    except MedboostError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise DataError(
            f"{path}: cannot be read as a .npz file ({type(e).__name__}: {e}); it is corrupt or truncated, "
            f"delete it and download it again"
        ) from e


def _layout_problem(shape: tuple[int, ...], task: Task, size: int) -> str | None:
    """Why an images array of ``shape`` is not ``task``'s layout at ``size`` (None when it is).

    MedMNIST stores (N, H, W) for grayscale and (N, H, W, 3) for RGB 2D tasks, (N, D, H, W) for 3D ones: channels
    last, never a channel axis of another length. A last axis longer than 4 cannot be channels, so (N, 28, 28, 28)
    under a 2D task is a volume, and (N, 3, 28, 28) has its channels first.
    """
    spatial, channels = (size,) * task.dims, task.n_channels
    if shape[1:] == spatial + (channels,) or (channels == 1 and shape[1:] == spatial):
        return None
    channel_like = (1, 3, 4)
    if task.dims == 2 and (len(shape) == 5 or (len(shape) == 4 and shape[-1] not in channel_like)) \
            and shape[1] not in channel_like:
        return f"these look like 3D volumes, but {task.flag} is a 2D task; use a 3D task ({_names(3)}) for volumes"
    if task.dims == 3 and (len(shape) == 3 or (len(shape) == 4 and shape[-1] in channel_like)):
        return f"these look like 2D images, but {task.flag} is a 3D task; use a 2D task ({_names(2)}) for 2D images"
    if len(shape) == task.dims + 2 and shape[1] in channel_like and shape[-1] not in channel_like:
        return "the channel axis comes first; MedMNIST stores channels last: np.moveaxis(images, 1, -1)"
    kind = "RGB (3 channels)" if channels == 3 else "grayscale (1 channel)"
    if len(shape) == task.dims + 1 and shape[1:] == spatial:
        return f"the images are grayscale but {task.flag}'s are {kind}"
    if len(shape) == task.dims + 2 and shape[1 : 1 + task.dims] == spatial:
        return f"the images have {shape[-1]} channels but {task.flag}'s are {kind}"
    if len(shape) in (task.dims + 1, task.dims + 2):
        return f"the images are {'x'.join(map(str, shape[1 : 1 + task.dims]))}, not size {size}; is it the file of " \
               f"another size?"
    return f"an array of rank {len(shape)} is not images of a {task.dims}D task"


def _names(dims: int) -> str:
    """The CLI's names of the tasks of that rank, for messages."""
    return ", ".join(short for short in SHORT_NAMES if short.endswith("3d") == (dims == 3))


def _images_tensor(images: np.ndarray, task: Task, size: int, path: Path, split: str) -> torch.Tensor:
    n_spatial = task.dims
    side = ", ".join([str(size)] * n_spatial)
    expected = f"(N, {side}, 3)" if task.n_channels == 3 else f"(N, {side}) or (N, {side}, 1)"
    problem = _layout_problem(images.shape, task, size)
    if problem is None and images.dtype != np.uint8:
        problem = "convert the values to 0..255 and the array with .astype(np.uint8)"
    if problem is not None:
        raise DataError(f"{path}: {split}_images has shape {images.shape} and dtype {images.dtype}; expected uint8 "
                        f"{expected} for {task.flag}: {problem}")
    x = torch.from_numpy(images)
    x = x.unsqueeze(1) if images.ndim == n_spatial + 1 else x.movedim(-1, 1)  # channels first
    return x.contiguous()


def _labels_tensor(labels: np.ndarray, task: Task, path: Path, split: str) -> torch.Tensor:
    where = f"{path}: {split}_labels"
    upper = 1 if task.multilabel else task.n_classes - 1
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {labels.dtype}; expected integer class indices 0..{upper}")
    if labels.ndim == 1:
        labels = labels[:, None]
    width = task.n_classes if task.multilabel else 1
    if labels.ndim != 2 or labels.shape[1] != width:
        raise DataError(f"{where} has shape {labels.shape}; expected (N, {width}) for {task.task_type}")
    if labels.dtype.kind == "f":  # float labels are fine when they hold whole numbers (a cast would turn NaN to -2^63)
        for bad, what in ((~np.isfinite(labels), "NaN or infinite"), (labels != np.round(labels), "fractional")):
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DataError(f"{where} has {int(bad.sum())} {what} value(s) (the first in row {row}: "
                                f"{labels[row].tolist()}); labels are whole numbers 0..{upper}, one per image")
    if labels.min() < 0 or labels.max() > upper:
        row = int(np.argwhere((labels < 0) | (labels > upper))[0][0])
        raise DataError(f"{where} has values in [{labels.min()}, {labels.max()}]; {task.flag} allows 0..{upper} "
                        f"(the first outside in row {row}: {labels[row].tolist()})")
    return torch.from_numpy(labels.astype(np.int64))


def _auc_undefined(labels: torch.Tensor, task: Task) -> tuple[str, str] | None:
    """(what the split lacks, what it needs) where AUC is undefined on these labels, else None: ``metrics.auc``
    averages over the classes (labels) that have both positives and negatives, so it is NaN only when none has."""
    y = labels.numpy()
    if task.multilabel:
        if ((y.min(axis=0) == 0) & (y.max(axis=0) == 1)).any():
            return None
        return f"none of its {task.n_classes} labels has both values (0 and 1)", "some label with both values"
    present = np.unique(y)
    if len(present) > 1:
        return None
    return f"all {len(y)} samples are class {int(present[0])}", "samples of at least two classes"


def _check_test_auc(labels: torch.Tensor, task: Task, path: Path) -> None:
    """Refuse, before training, a test split on which the run's test AUC would be NaN (the headline number)."""
    undefined = _auc_undefined(labels, task)
    if undefined is None:
        return
    problem, need = undefined
    fix = "choose fewer folds (data.folds) or another data.fold_seed" if task.cohort is not None else \
        "move samples of the other classes into it"
    raise DataError(f"{path}: in the test split {problem}, so test AUC is undefined and the run would record "
                    f"test_auc = NaN; the test split needs {need}: {fix}")


def _check_auc_selectable(labels: torch.Tensor, task: Task, path: Path) -> None:
    """Refuse a val split on which AUC is undefined (``_auc_undefined``): every epoch would tie."""
    undefined = _auc_undefined(labels, task)
    if undefined is None:
        return
    problem, need = undefined
    raise DataError(f"{path}: in the val split {problem}, so val AUC is undefined and cannot choose the best epoch; "
                    f"val needs {need} (move some samples from train), or select by accuracy or loss with "
                    f"--set train.select_metric=acc (or loss)")
