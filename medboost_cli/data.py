"""MedMNIST data: download with MD5 checks, load npz arrays into memory, batch transforms on the device.

Images stay uint8 tensors in memory (N, C, H, W) or (N, C, D, H, W); each batch is converted to float,
resized to the backbone's input size, augmented and normalised in a handful of batched tensor operations
on the training device. No per-image Python work, no PIL, no JPEG folders.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError, MedboostError
from .tasks import Task

SPLITS = ("train", "val", "test")


def data_dir_from(arg: str | os.PathLike | None) -> Path:
    """The data folder: the argument, else $MEDBOOST_DATA, else ~/.medmnist (medmnist's own default)."""
    if arg:
        return Path(arg).expanduser()
    if os.environ.get("MEDBOOST_DATA"):
        return Path(os.environ["MEDBOOST_DATA"]).expanduser()
    return Path("~/.medmnist").expanduser()


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- download


def download(task: Task, size: int, data_dir: Path, timeout: float = 30.0, log=print) -> Path:
    """Fetch ``task``'s npz file at ``size`` from medmnist's URL into ``data_dir``; verify its MD5.

    A file already present is kept when its MD5 matches and fetched again otherwise. The download goes to a
    ``.part`` file that replaces the target only after its MD5 matched, so a failure never leaves a bad file.
    """
    name, url, expected = task.filename(size), task.url(size), task.md5(size)
    target = data_dir / name
    if target.exists():
        got = md5sum(target)
        if got == expected:
            log(f"{target}: present, MD5 ok")
            return target
        log(f"{target}: MD5 {got} does not match medmnist's {expected}; downloading it again")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data folder {data_dir}: {e.strerror}; choose another with --data-dir") from e
    part = target.with_name(name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {name} from {url} ({reason}); download it by hand and put it at {target}"
        ) from e
    if digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise DataError(
            f"downloaded {name} from {url} but its MD5 {digest.hexdigest()} is not medmnist's {expected}; try again"
        )
    os.replace(part, target)
    log(f"{target}: downloaded, MD5 ok")
    return target


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
    return data_dir / task.filename(size)


def load_dataset(task: Task, size: int, data_dir: Path, verify: bool = True) -> Dataset:
    """Read all three splits of ``task`` at ``size`` from ``data_dir`` into memory.

    ``verify`` checks the file's MD5 and the split sizes against medmnist's INFO; switch it off only for data
    you made yourself (subsets, synthetic files). The structure, shapes and labels are always checked.
    """
    path = dataset_path(task, size, data_dir)
    if not path.is_file():
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
    arrays = _read_npz(path)
    splits = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if verify and len(images) != task.n_samples[split]:
            raise DataError(
                f"{path}: split '{split}' has {len(images)} images but medmnist's INFO for {task.flag} says "
                f"{task.n_samples[split]}; the file is not the official one (use --set data.verify=false for your own data)"
            )
        splits[split] = Split(_images_tensor(images, task, size, path, split), _labels_tensor(labels, task, path, split))
    return Dataset(task, size, path, verify, splits)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(f"{path}: not a MedMNIST file, missing arrays {', '.join(missing)}")
            return {k: npz[k] for k in keys}
    except MedboostError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise DataError(
            f"{path}: cannot be read as a .npz file ({type(e).__name__}: {e}); it is corrupt or truncated, "
            f"delete it and download it again"
        ) from e


def _images_tensor(images: np.ndarray, task: Task, size: int, path: Path, split: str) -> torch.Tensor:
    n_spatial = task.dims
    expected = f"(N, {', '.join([str(size)] * n_spatial)}[, C])"
    shape_ok = images.ndim in (n_spatial + 1, n_spatial + 2) and all(d == size for d in images.shape[1 : 1 + n_spatial])
    if images.dtype != np.uint8 or not shape_ok:
        raise DataError(
            f"{path}: {split}_images has shape {images.shape} and dtype {images.dtype}; expected uint8 {expected}"
        )
    x = torch.from_numpy(images)
    x = x.unsqueeze(1) if images.ndim == n_spatial + 1 else x.movedim(-1, 1)  # channels first
    return x.contiguous()


def _labels_tensor(labels: np.ndarray, task: Task, path: Path, split: str) -> torch.Tensor:
    if labels.ndim == 1:
        labels = labels[:, None]
    width = task.n_classes if task.multilabel else 1
    if labels.ndim != 2 or labels.shape[1] != width:
        raise DataError(f"{path}: {split}_labels has shape {labels.shape}; expected (N, {width}) for {task.task_type}")
    upper = 1 if task.multilabel else task.n_classes - 1
    if labels.size and (labels.min() < 0 or labels.max() > upper):
        raise DataError(
            f"{path}: {split}_labels has values in [{labels.min()}, {labels.max()}]; {task.flag} allows 0..{upper}"
        )
    return torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class BatchTransform:
    """uint8 batch -> normalised float batch at the model's input size, with optional random affine augmentation.

    Augmentation draws one affine map per sample (flips, zoom, shift, in-plane rotation for 2D) and applies
    them all with a single ``affine_grid`` + ``grid_sample`` that also resizes to ``out_size``. Without
    augmentation the batch is resized with ``F.interpolate`` (same bilinear/trilinear sampling).
    """

    out_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: float = 0.0
    vflip: float = 0.0
    dflip: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    rotate: float = 0.0
    padding: str = "border"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 theta: torch.Tensor | None = None) -> torch.Tensor:
        """``generator`` draws one map per sample of ``x``; ``theta`` gives them instead (``maps``' rows for these
        samples), so that processes that each hold some rows of a batch apply the maps one process would."""
        spatial = x.ndim - 2
        x = x.float().div_(255.0)
        if theta is None and generator is not None:
            theta = self.maps(x.shape[0], spatial, generator)
        if theta is not None:
            theta = theta.to(x.device, non_blocking=True)
            size = (x.shape[0], x.shape[1]) + (self.out_size,) * spatial
            grid = F.affine_grid(theta, list(size), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        elif x.shape[2:] != (self.out_size,) * spatial:
            x = F.interpolate(x, size=(self.out_size,) * spatial, mode="bilinear" if spatial == 2 else "trilinear")
        if x.shape[1] != self.in_chans:
            if x.shape[1] != 1:
                raise DataError(f"images have {x.shape[1]} channels but the backbone takes {self.in_chans}")
            x = x.expand(-1, self.in_chans, *x.shape[2:])
        shape = (1, -1) + (1,) * spatial
        mean = torch.tensor(self.mean, device=x.device).view(shape)
        std = torch.tensor(self.std, device=x.device).view(shape)
        return (x - mean) / std

    @property
    def augments(self) -> bool:
        return bool(self.hflip or self.vflip or self.dflip or self.translate or self.rotate or self.scale != (1.0, 1.0))

    def maps(self, n: int, spatial: int, generator: torch.Generator) -> torch.Tensor | None:
        """The affine maps of a batch of ``n`` samples (``sample_affine``), or None when nothing augments."""
        return self.sample_affine(n, spatial, generator) if self.augments else None

    def sample_affine(self, n: int, spatial: int, g: torch.Generator) -> torch.Tensor:
        """(n, spatial, spatial+1) maps from output to input coordinates (x, y[, z] = W, H[, D] axes)."""

        def flips(p: float) -> torch.Tensor:
            return torch.where(torch.rand(n, generator=g) < p, -1.0, 1.0)

        lo, hi = self.scale
        zoom = lo + (hi - lo) * torch.rand(n, generator=g)  # fraction of the field of view kept
        signs = [flips(self.hflip), flips(self.vflip)] + ([flips(self.dflip)] if spatial == 3 else [])
        linear = torch.diag_embed(torch.stack(signs, dim=1) * zoom[:, None])
        if spatial == 2 and self.rotate:
            angle = math.radians(self.rotate) * (2 * torch.rand(n, generator=g) - 1)
            cos, sin = angle.cos(), angle.sin()
            rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
            linear = rotation @ linear
        shift = 2 * self.translate * (2 * torch.rand(n, spatial, generator=g) - 1)  # normalised coords span 2
        return torch.cat([linear, shift[:, :, None]], dim=2)
