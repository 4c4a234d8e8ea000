"""How a number was made (``Protocol``) and the aspects in which two protocols can differ (``ASPECTS``).

A result is only comparable with another made the same way (MedMNIST issue #58): at the same image size and
input side, resized the same way, from the same kind of start (pretrained or from scratch), over as many seeds,
with the epoch chosen by the same rule. Each aspect is one small typed entry with the letter the report marks a
difference with; an aspect either side does not state (None) marks nothing, and the protocol's text says "n/s"
(not stated) for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Protocol:
    """How one number was made; None: the source does not state it."""

    size: int | None  # the data's image side (MedMNIST file size: 28, 64, 128, 224)
    input: int | None  # the side of what the network takes (after upsampling or padding)
    # how the image reaches a larger input: "upsample" (interpolated: the paper, MedMNIST v2's ResNet (224)) or
    # "pad" (zero-padded into the centre: MedMNIST+); None where the input is the image's own size
    resize: str | None = None
    pretrained: bool | None = None
    seeds: int | None = None  # runs behind the number (1: a single reported number, no spread)
    # what the reported epoch or model was chosen on: "val" (a validation metric), "val loss" (early stopping on
    # it), "test" (the test split), "none" (nothing trained: kNN)
    selection: str | None = None

    @property
    def resized(self) -> bool:
        return None not in (self.size, self.input) and self.input != self.size

    def text(self) -> str:
        """Short words for a table: "28→224 upsample, pretrained, 3 seeds, sel. val loss"."""
        return ", ".join(aspect.words(self) for aspect in ASPECTS if aspect.words(self))


@dataclass(frozen=True)
class Aspect:
    """One way two protocols can differ: its mark letter, its name, whether ``ours`` and ``anchor`` differ in it
    (both stated), and its words in a protocol's text (empty: said by another aspect's words)."""

    letter: str
    name: str
    differs: Callable[[Protocol, Protocol], bool]
    words: Callable[[Protocol], str]


def _known(*values) -> bool:
    return all(v is not None for v in values)


def _size_words(p: Protocol) -> str:
    if p.size is None:
        return "size n/s"
    if not p.resized:
        return f"{p.size}"
    return f"{p.size}→{p.input} {p.resize or 'resize n/s'}"


def _seed_words(p: Protocol) -> str:
    if p.seeds is None:
        return "seeds n/s"
    return "1 seed" if p.seeds == 1 else f"{p.seeds} seeds"


def _selection_words(selection: str | None) -> str:
    if selection is None:
        return "selection n/s"
    return "no training" if selection == "none" else f"sel. {selection}"


ASPECTS: tuple[Aspect, ...] = (
    Aspect("S", "size", lambda a, b: _known(a.size, a.input, b.size, b.input) and (a.size, a.input) != (b.size, b.input),
           _size_words),
    Aspect("R", "resize", lambda a, b: a.resized and b.resized and _known(a.resize, b.resize) and a.resize != b.resize,
           lambda p: ""),  # said by the size's words ("28→224 pad")
    Aspect("P", "pretrained", lambda a, b: _known(a.pretrained, b.pretrained) and a.pretrained != b.pretrained,
           lambda p: "pretrained n/s" if p.pretrained is None else ("pretrained" if p.pretrained else "scratch")),
    Aspect("N", "seeds", lambda a, b: _known(a.seeds, b.seeds) and a.seeds != b.seeds, _seed_words),
    Aspect("V", "selection", lambda a, b: _known(a.selection, b.selection) and a.selection != b.selection,
           lambda p: _selection_words(p.selection)),
)

LEGEND = ("S size (data size→input side), R resize (upsample vs pad), P pretrained vs from scratch, N number of "
          "seeds, V selection rule (validation metric, validation loss, test split)")


def differences(ours: Protocol, anchor: Protocol) -> list[Aspect]:
    """The aspects in which ``ours`` and ``anchor`` differ (both stated), in ASPECTS' order."""
    return [aspect for aspect in ASPECTS if aspect.differs(ours, anchor)]


def marks(ours: Protocol, anchor: Protocol) -> str:
    """The letters of the aspects that differ ("SPV"), empty where the protocols match."""
    return "".join(aspect.letter for aspect in differences(ours, anchor))
