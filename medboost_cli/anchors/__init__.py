"""Reference numbers from the field (anchors), each with its source and the protocol it was made under.

One registry, ``SOURCES``: each source is one module here with one ``AnchorSource`` entry (its short citation,
where its numbers were read, how they were made) and, where it carries numbers, a compact table beside it
(``medmnist_v2.tsv``, ``medmnist_plus.tsv``) read into typed ``Anchor`` rows. Adding a source is a new module
(and its table) plus one line in ``SOURCES``. The paper's own numbers stay with the studies that regenerate them
(recipes/studies/*.yaml); its entry here (``paper``) says only how they were made.
"""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType

from ..errors import ConfigError
from . import medmnist_plus, medmnist_v2, paper
from .source import Anchor, AnchorSource, read_table
from .protocol import ASPECTS, LEGEND, Protocol, differences, marks

SOURCES: MappingProxyType[str, AnchorSource] = MappingProxyType(
    {s.key: s for s in (paper.SOURCE, medmnist_v2.SOURCE, medmnist_plus.SOURCE)})

__all__ = ["ASPECTS", "LEGEND", "SOURCES", "Anchor", "AnchorSource", "Protocol", "anchor_source", "anchors",
           "anchors_for", "differences", "marks"]


def anchor_source(key: str) -> AnchorSource:
    """The registered source ``key``; an unknown key is one ConfigError line listing the registered ones."""
    if key not in SOURCES:
        raise ConfigError(f"unknown anchor source '{key}'; choose one of {', '.join(SOURCES)}")
    return SOURCES[key]


@lru_cache(maxsize=None)
def anchors(key: str) -> tuple[Anchor, ...]:
    """Every anchor of source ``key``, read once from its packaged table (none for a source without one)."""
    entry = anchor_source(key)
    return tuple(entry.read(read_table(entry.table))) if entry.table else ()


def anchors_for(task: str, key: str | None = None) -> list[Anchor]:
    """The anchors of ``task`` (medboost's short name: "breast", "adrenal3d"), of every source or of ``key``."""
    keys = [key] if key else list(SOURCES)
    return [a for k in keys for a in anchors(k) if a.task == task]
