"""``data.resize: upsample``: the image is interpolated to the backbone's input (bilinear in 2D, trilinear in 3D),
on the device, as part of the augmentation's resampling. What the R-LLM paper and MedMNIST v2's 224 baselines do
with 28x28 images; an image larger than the input is interpolated down the same way."""

from __future__ import annotations

import torch

from .base import ResizeMode


class Upsample(ResizeMode):
    def sample_shape(self, shape: tuple[int, ...], out_size: int) -> tuple[int, ...]:
        return (out_size,) * len(shape)

    def place(self, x: torch.Tensor, out_size: int) -> torch.Tensor:
        return x


UPSAMPLE = Upsample("upsample", what="interpolated to the input (bilinear, 3D trilinear)",
                    protocol="the R-LLM paper (28 upsampled to 224), MedMNIST v2's ResNets at 224")
