"""The ``ResizeMode`` entry: how a batch whose images are smaller than the backbone's input is brought to it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResizeMode:
    """One value of ``data.resize``. ``BatchTransform`` resamples a batch (augmentation, or a plain resize) to
    ``sample_shape``, normalises it, then hands it to ``place``, which brings it to the backbone's input side."""

    name: str
    what: str  # how an image smaller than the input reaches it, for the docs and the recipe's help
    protocol: str  # whose protocol it is

    def sample_shape(self, shape: tuple[int, ...], out_size: int) -> tuple[int, ...]:
        """The spatial shape the batch is resampled to, from its own (``shape``) and the input side."""
        raise NotImplementedError

    def place(self, x: torch.Tensor, out_size: int) -> torch.Tensor:
        """The normalised batch at ``sample_shape`` -> the batch at the input side on every spatial axis."""
        raise NotImplementedError

    def problem(self, image_side: int, input_side: int) -> str | None:
        """Why images of ``image_side`` cannot be brought to an input of ``input_side`` this way (None: they can)."""
        return None
