"""The cohort file that ``medboost prepare dicom`` writes (``dicom.py``) and cohort runs read (``folds.py``).

The cohort file (``COHORT_FORMAT``) is an ``np.savez_compressed`` archive (no pickles), NOT split into
train/val/test (``folds.py`` splits it by patient at training time):

=============  ===============  ===================================================================
key            dtype, shape     content
=============  ===============  ===================================================================
images         uint8 (N, S, S)  air dark, MedMNIST's 2D grayscale layout
labels         int64 (N, 1)     class index from labels.csv
patient_ids    str (N,)         from labels.csv; folds never split a patient
files          str (N,)         path relative to FOLDER, as in labels.csv
crop_boxes     int32 (N, 4)     (top, bottom, left, right) of the region used, in the file's pixels
meta           str ()           JSON: format, version, size, aspect, margin, masks, skipped files
=============  ===============  ===================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .fileio import atomic_write_file
from .npz_arrays import read_arrays

COHORT_FORMAT = "medboost-cohort"
COHORT_VERSION = 1
COHORT_KEYS = ("images", "labels", "patient_ids", "files", "crop_boxes", "meta")
# Labels are class indices 0..MAX_CLASSES-1: the model gets one output per class up to the largest label, so a
# label of 10**9 would ask for a head of a billion outputs. (MedMNIST's tasks have at most 14; ImageNet 1000.)
MAX_CLASSES = 1000


def write_cohort(out: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` as a cohort file, atomically (a temporary file, then a rename)."""
    arrays = {**arrays, "meta": np.array(json.dumps(meta))}

    try:  # a file object: np.savez would append .npz to a path
        atomic_write_file(out, lambda f: np.savez_compressed(f, **arrays))
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}; check the folder and free space") from e


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2])[:200] or type(e).__name__


@dataclass
class Cohort:
    images: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray  # int64 (N, 1)
    patient_ids: np.ndarray  # str (N,)
    files: np.ndarray  # str (N,)
    crop_boxes: np.ndarray  # int32 (N, 4)
    meta: dict
    path: Path

    def __len__(self) -> int:
        return len(self.images)


def load_cohort(path: Path) -> Cohort:
    """Read and check a file written by ``prepare_dicom``; DataError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cohort file not found: {path}; make it with `medboost prepare dicom`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in COHORT_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: not a cohort file from `medboost prepare dicom`, missing arrays "
                                f"{', '.join(missing)}")
            arrays = read_arrays(npz, COHORT_KEYS, path)
        meta = json.loads(str(arrays.pop("meta")))
    except DataError:
        raise
    except Exception as e:  # zipfile, zlib, numpy and json errors for a damaged file
        raise DataError(f"{path}: cannot be read as a cohort file ({type(e).__name__}: {_first_line(e)}); "
                        f"make it again with `medboost prepare dicom`") from e
    if not isinstance(meta, dict) or meta.get("format") != COHORT_FORMAT:
        raise DataError(f"{path}: its meta does not say format '{COHORT_FORMAT}'; not written by medboost")
    n = len(arrays["images"])
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataError(f"{path}: images have shape {images.shape} and dtype {images.dtype}; expected uint8 (N, S, S)")
    if labels.shape != (n, 1) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels have shape {labels.shape} and dtype {labels.dtype}; expected integers (N, 1)")
    if n and not 0 <= labels.min() <= labels.max() < MAX_CLASSES:
        raise DataError(f"{path}: labels run from {labels.min()} to {labels.max()}; class indices are 0 to "
                        f"{MAX_CLASSES - 1}: make the file again with `medboost prepare dicom` from labels 0, 1, ...")
    for key in ("patient_ids", "files", "crop_boxes"):
        if len(arrays[key]) != n:
            raise DataError(f"{path}: {key} has {len(arrays[key])} entries for {n} images")
    return Cohort(meta=meta, path=path, **arrays)
