"""Every random stream of a run, named in one place, each a pure function of the run's seed (and epoch).

Two promises rest on these streams. Paired runs (same seed, different booster) share the data order, the
augmentation and the initial weights of every part they have in common, so the booster is the only
difference; hence each model part draws from its own stream, and what one part draws cannot shift another's.
A run resumed from an epoch checkpoint replays exactly what an uninterrupted run would have drawn; hence the
per-epoch streams depend on (seed, epoch) only, never on what happened before.

The constants are arbitrary but fixed: changing one changes every result, so they stay as they are.
"""

from __future__ import annotations

from enum import IntEnum

import torch


class Init(IntEnum):
    """Global-RNG seeds for building each part of the model: ``seed + offset``."""

    BACKBONE = 0
    HEAD = 1_000
    BOOSTER = 2_000  # F_E and F_D


class EpochStream(IntEnum):
    """Per-epoch generators (``epoch_generator``)."""

    DATA_ORDER = 0
    AUGMENT = 1
    DROPOUT = 2  # dropout and drop-path draw from the global RNG, seeded with this stream's seed


def init_seed(seed: int, part: Init) -> int:
    """The global-RNG seed to set before building ``part`` of a run with ``seed``."""
    return seed + int(part)


def epoch_seed(seed: int, epoch: int, stream: EpochStream) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + int(stream) * 104_729) % (2**63)


def dropout_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global-RNG seed for dropout and drop-path in ``epoch`` on process ``rank`` of a multi-process run.
    Rank 0's is the one-process seed, so a one-process run is unchanged; every other process draws its own
    masks. The masks still differ with the number of processes (each draws them for its own share of a batch):
    they are what makes a run on N processes differ from the same run on one, beyond rounding."""
    return (epoch_seed(seed, epoch, EpochStream.DROPOUT) + rank * 15_485_863) % (2**63)


def epoch_generator(seed: int, epoch: int, stream: EpochStream = EpochStream.DATA_ORDER) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, stream): data order and augmentation are the same
    for every run with that seed, whatever model it trains, and a resumed run replays them exactly."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, stream))


def llm_init_generator(seed: int) -> torch.Generator:
    """The generator for F_L's controls: random initialisation or shuffling of the pretrained weights."""
    return torch.Generator().manual_seed(seed * 7_777 + 17)
