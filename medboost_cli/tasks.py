"""MedMNIST task names and metadata, read from the medmnist package's INFO table; and cohort files.

A task named by a path ending in ``.npz`` is a cohort file written by ``medboost prepare dicom`` (dicom.py): its
Task says what the file holds (binary-class if its labels are 0/1, else multi-class; grayscale 2D at the file's
size) and carries a ``CohortFolds``, the file and which patient-level fold of it a run uses (folds.py). The
recipe fills in the fold (``Recipe.task_info``); ``data.load_dataset`` splits the file by it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from medmnist import INFO

from .errors import ConfigError

# Short names used on the command line and in recipes -> medmnist flags.
SHORT_NAMES: dict[str, str] = {
    "breast": "breastmnist",
    "retina": "retinamnist",
    "pneumonia": "pneumoniamnist",
    "derma": "dermamnist",
    "oct": "octmnist",
    "organa": "organamnist",
    "fracture3d": "fracturemnist3d",
    "adrenal3d": "adrenalmnist3d",
    "nodule3d": "nodulemnist3d",
    "vessel3d": "vesselmnist3d",
}
_FLAG_TO_SHORT = {flag: short for short, flag in SHORT_NAMES.items()}

TASK_TYPES = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")


@dataclass(frozen=True)
class CohortFolds:
    """A cohort file and the patient-level fold of it that a run trains on (folds.fold_splits' arguments)."""

    path: Path  # absolute
    identity: str  # file name and the first 16 hex digits of its SHA-256: what a run id's hash covers
    k: int | None = None  # None until the recipe says (data.folds)
    fold: int = 0
    seed: int = 0
    val_fraction: float = 0.2


@dataclass(frozen=True)
class Task:
    """What the rest of the toolkit needs to know about one MedMNIST dataset."""

    flag: str  # medmnist flag, e.g. "breastmnist"
    short: str  # CLI name, e.g. "breast" (the flag itself when there is no short name)
    task_type: str  # one of TASK_TYPES
    n_classes: int  # classes, or labels for multi-label
    n_channels: int
    dims: int  # 2 or 3
    n_samples: dict[str, int]
    sizes: tuple[int, ...]
    cohort: CohortFolds | None = None  # a cohort file (``medboost prepare dicom``), not a MedMNIST dataset

    @property
    def multilabel(self) -> bool:
        return self.task_type == "multi-label, binary-class"

    def with_folds(self, k: int | None, fold: int, seed: int, val_fraction: float) -> Task:
        """This cohort task with the fold a recipe chose (data.folds, data.fold, data.fold_seed, data.val_fraction)."""
        assert self.cohort is not None, "only a cohort task has folds"
        return replace(self, cohort=replace(self.cohort, k=k, fold=fold, seed=seed, val_fraction=val_fraction))

    def filename(self, size: int) -> str:
        """medmnist's file name: ``{flag}.npz`` at 28, ``{flag}_{size}.npz`` otherwise."""
        self.check_size(size)
        if self.cohort is not None:
            return self.cohort.path.name
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int) -> str:
        return INFO[self.flag]["url" if size == 28 else f"url_{size}"]

    def md5(self, size: int) -> str:
        return INFO[self.flag]["MD5" if size == 28 else f"MD5_{size}"]

    def check_size(self, size: int) -> None:
        if size not in self.sizes and self.cohort is not None:
            raise ConfigError(f"data.size={size}, but the cohort file {self.cohort.path} holds {self.sizes[0]}x"
                              f"{self.sizes[0]} images; unset data.size (or prepare the cohort at {size})")
        if size not in self.sizes:
            raise ConfigError(
                f"size {size} is not available for {self.flag}: MedMNIST publishes it at "
                f"{', '.join(map(str, self.sizes))} only; choose one of those"
            )


def resolve_task(name: str) -> Task:
    """Map a short name ("breast") or a medmnist flag ("breastmnist") to a Task; unknown names are an error."""
    if is_cohort_name(name):
        return cohort_task(Path(name))
    key = name.strip().lower()
    flag = SHORT_NAMES.get(key, key)
    if flag not in INFO:
        known = ", ".join(SHORT_NAMES)
        raise ConfigError(
            f"unknown task '{name}': use a short name ({known}) or a medmnist flag ({', '.join(sorted(INFO))})"
        )
    info = INFO[flag]
    dims = 3 if flag.endswith("3d") else 2
    return Task(
        flag=flag,
        short=_FLAG_TO_SHORT.get(flag, flag),
        task_type=info["task"],
        n_classes=len(info["label"]),
        n_channels=int(info["n_channels"]),
        dims=dims,
        n_samples=dict(info["n_samples"]),
        sizes=published_sizes(info),
    )


def published_sizes(info: dict) -> tuple[int, ...]:
    """The sizes medmnist's INFO has a file for: 28 (``url``) and each ``url_{size}`` (MedMNIST+: 64, 128 and 224
    for 2D tasks, 64 for 3D ones)."""
    return (28,) + tuple(sorted(int(key[4:]) for key in info if key.startswith("url_") and key[4:].isdigit()))


def is_cohort_name(name: str) -> bool:
    """Whether a task string names a cohort file (a path ending in .npz) rather than a MedMNIST task."""
    return name.strip().lower().endswith(".npz")


def cohort_task(path: Path) -> Task:
    """The Task of the cohort file at ``path``, read once per file version (a run asks for it often)."""
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is None or not path.is_file():
        from .errors import DataError

        raise DataError(f"cohort file not found: {path}; make it with `medboost prepare dicom FOLDER --labels CSV "
                        f"--out {path.name}`")
    return _cohort_task(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _cohort_task(path: str, n_bytes: int, mtime_ns: int) -> Task:
    from .cohort_file import (
        load_cohort,  # numpy and the file checks, only for cohort tasks
    )

    cohort = load_cohort(Path(path))
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    n_classes = max(2, int(cohort.labels.max()) + 1) if len(cohort) else 2
    size = int(cohort.images.shape[1])
    short = re.sub(r"[^A-Za-z0-9._+]", "_", Path(path).stem).lstrip("._+") or "cohort"  # a run id's first field
    return Task(flag=path, short=short, task_type="binary-class" if n_classes == 2 else "multi-class",
                n_classes=n_classes, n_channels=1, dims=2, n_samples={"all": len(cohort)}, sizes=(size,),
                cohort=CohortFolds(Path(path), f"{Path(path).name}:{digest[:16]}"))
