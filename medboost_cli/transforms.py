"""Batches on the training device: a uint8 batch brought to the model's input (interpolated or padded:
``data.resize``, resizing/), augmented by one random affine map per sample and normalised, in a handful of batched
tensor operations (no per-image Python work)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DataError
from .resizing import DEFAULT_RESIZE, RESIZES, ResizeMode


@dataclass(frozen=True)
class BatchTransform:
    """uint8 batch -> normalised float batch at the model's input size, with optional random affine augmentation.

    Augmentation draws one affine map per sample (flips, zoom, shift, in-plane rotation for 2D) and applies
    them all with a single ``affine_grid`` + ``grid_sample`` that also resizes to ``out_size``. Without
    augmentation the batch is resized with ``F.interpolate`` (same bilinear/trilinear sampling). ``resize`` says
    how a smaller image reaches ``out_size``: ``upsample`` resamples it to ``out_size`` as above; ``pad`` resamples
    (augments) it at its own size and pads the normalised batch with zeros around it.
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
    resize: ResizeMode = RESIZES[DEFAULT_RESIZE]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 theta: torch.Tensor | None = None) -> torch.Tensor:
        """``generator`` draws one map per sample of ``x``; ``theta`` gives them instead (``maps``' rows for these
        samples), so that processes that each hold some rows of a batch apply the maps one process would."""
        spatial = x.ndim - 2
        x = x.float().div_(255.0)
        sampled = self.resize.sample_shape(tuple(x.shape[2:]), self.out_size)  # where the resampling lands
        if theta is None and generator is not None:
            theta = self.maps(x.shape[0], spatial, generator)
        if theta is not None:
            theta = theta.to(x.device, non_blocking=True)
            size = (x.shape[0], x.shape[1]) + sampled
            grid = F.affine_grid(theta, list(size), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        elif x.shape[2:] != sampled:
            x = F.interpolate(x, size=sampled, mode="bilinear" if spatial == 2 else "trilinear")
        if x.shape[1] != self.in_chans:
            if x.shape[1] != 1:
                raise DataError(f"images have {x.shape[1]} channels but the backbone takes {self.in_chans}")
            x = x.expand(-1, self.in_chans, *x.shape[2:])
        shape = (1, -1) + (1,) * spatial
        mean = torch.tensor(self.mean, device=x.device).view(shape)
        std = torch.tensor(self.std, device=x.device).view(shape)
        return self.resize.place((x - mean) / std, self.out_size)

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
