"""What every anchor source declares (``AnchorSource``) and what each of its numbers is (``Anchor``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Iterable

from .protocol import Protocol

SCHEMES = ("end-to-end", "linear probing", "kNN")  # MedMNIST+'s training schemes


@dataclass(frozen=True)
class Anchor:
    """One reference number pair on one task: test ACC and AUC as fractions (None: not reported), with their
    spread over seeds where the source gives one."""

    source: str  # the key of its AnchorSource
    task: str  # medboost's short task name ("breast", "adrenal3d")
    method: str  # the model or method as the source names it
    protocol: Protocol
    acc: float | None
    auc: float | None
    acc_std: float | None = None
    auc_std: float | None = None
    scheme: str | None = None  # one of SCHEMES (MedMNIST+), else None
    best_by: str | None = None  # "auc" or "acc": the best model of its source's cell by that metric (MedMNIST+)

    def value(self, metric: str) -> float | None:
        return {"acc": self.acc, "auc": self.auc}[metric]

    def std(self, metric: str) -> float | None:
        return {"acc": self.acc_std, "auc": self.auc_std}[metric]


@dataclass(frozen=True)
class AnchorSource:
    """One source of reference numbers: ``citation`` is the short form a table shows beside each number,
    ``reference`` where the numbers were read (repository, file and commit, or DOI), ``about`` one sentence on
    what its numbers are and how they were made; ``table`` the packaged file of its numbers (None: none here),
    ``read`` its rows -> Anchors; ``protocol(dims)`` its protocol for a 2D or 3D task where it has one protocol
    for all its numbers (the paper's)."""

    key: str
    citation: str
    reference: str
    about: str
    table: str | None = None
    read: Callable[[list[dict]], Iterable[Anchor]] = lambda rows: ()
    protocol: Callable[[int], Protocol] | None = None


def read_table(name: str) -> list[dict]:
    """The rows of the packaged tab-separated table ``name`` (medboost_cli/anchors/NAME)."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t"))


def number(text: str | None) -> float | None:
    """A table field as a float; empty: None."""
    return float(text) if text not in (None, "") else None
