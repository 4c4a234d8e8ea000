"""``data.resize: pad``: MedMNIST+'s zero-padding (Doerrich et al., the released ``train.py``). The image keeps its
own pixels (augmented at its own size) and sits in the centre of the input: ``(input - image) // 2`` zeros before
it on each axis (left, top, front), the rest after. The padding comes after normalisation, as torchvision's
``Pad(fill=0)`` after ``Normalize`` there, so it is 0 in normalised space: the normalisation mean's colour."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import ResizeMode


class Pad(ResizeMode):
    def sample_shape(self, shape: tuple[int, ...], out_size: int) -> tuple[int, ...]:
        return shape

    def place(self, x: torch.Tensor, out_size: int) -> torch.Tensor:
        sides = x.shape[2:]
        if any(side > out_size for side in sides):
            raise DataError(f"data.resize=pad: images of {'x'.join(map(str, sides))} do not fit the backbone's input "
                            f"of {out_size}; pad brings smaller images to it only")
        pads: list[int] = []
        for side in reversed(sides):  # F.pad takes the last axis first: (left, right, top, bottom, front, back)
            before = (out_size - side) // 2
            pads += [before, out_size - side - before]
        return F.pad(x, pads, mode="constant", value=0.0)

    def problem(self, image_side: int, input_side: int) -> str | None:
        if image_side <= input_side:
            return None
        return (f"images of side {image_side} are larger than the backbone's input ({input_side}), and pad only "
                f"brings smaller images to it; set backbone.img_size to {image_side} or more, or data.resize=upsample")


PAD = Pad("pad", what="centred on a canvas of the input's size, zeros around (after normalisation)",
          protocol="MedMNIST+ (Doerrich et al.: sizes 28, 64 and 128 padded to 224)")
