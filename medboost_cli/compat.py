"""Compatibility: results rows of older schemas, recipes saved without keys added since, and the run ids of
configurations from before a key existed. All of it is declared here or on the recipe field it concerns, and
applied by this module only:

* ``UPGRADES``, the row schema's history in order: which columns each schema version added, and what a row written
  before it states for each. ``upgrade_table`` applies them, to one row and to a whole folder alike.
* ``Legacy``, a marker on a recipe field added after runs were saved (``Annotated[type, Legacy(...)]`` in
  recipes.py): the value that reproduces what such a run computed, which ``fill_legacy`` gives a saved recipe that
  lacks the key (not today's default).
* ``HashOmitted``, a marker on a recipe field that the run-id hash leaves out while it holds what configurations
  from before the key had (``hash_view``), so that those keep their run ids.

This module names no recipe key and imports nothing of medboost's: every layer above may use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

# ------------------------------------------------------------------------------------------------ result rows

_WITH_LM = ("rllm", "out", "hybrid")  # the booster modes that have an F_L


def _lm_norm_before_v2(row: dict[str, Any]) -> str | None:
    """Runs before lm_norm had no final norm after F_L ("none") wherever they had an F_L at all."""
    return "none" if row.get("booster") in _WITH_LM else None


def _one_device(row: dict[str, Any]) -> str | None:
    return json.dumps([row["device"]]) if row.get("device") is not None else None


@dataclass(frozen=True)
class Upgrade:
    """Columns that rows written by schema ``version`` or earlier lack, each with its value for such a row, computed
    from the row's columns named in ``reads``. ``version`` None: columns added without a schema bump, which a row of
    any version may lack; they are filled in where null."""

    version: int | None
    adds: dict[str, Callable[[dict[str, Any]], Any]]
    reads: tuple[str, ...] = ()


UPGRADES: tuple[Upgrade, ...] = (
    # schema 2 added schema_version (rows without it are schema 1) and lm_norm
    Upgrade(1, {"schema_version": lambda row: 1, "lm_norm": _lm_norm_before_v2}, reads=("booster",)),
    # schema 3 added the binary sensitivity and specificity and the cohort fold: none of them computed before
    Upgrade(2, dict.fromkeys(("test_sens", "test_spec", "fold", "folds"), lambda row: None)),
    # added within schema 3: a row without them was trained by one process, on its device
    Upgrade(None, {"world_size": lambda row: 1, "devices": _one_device}, reads=("device",)),
    # added within schema 3: the run-level efficiency (run_cost.py), not measured before
    Upgrade(None, dict.fromkeys(("run_flops", "run_fraction_of_matmul", "run_cost_json"), lambda row: None)),
    # added within schema 3: the data folder the run read (evaluate and Grad-CAM default to it), not recorded before
    Upgrade(None, {"data_dir": lambda row: None}),
    # added within schema 3: the test metric panel (panel.py) and the run manifest, not recorded before
    Upgrade(None, dict.fromkeys(("test_balanced_acc", "test_macro_f1", "test_mcc", "test_ece", "test_panel_json",
                                 "manifest_json"), lambda row: None)),
    # added within schema 3: how a smaller image reached the backbone's input (data.resize); every run before
    # the key interpolated it
    Upgrade(None, {"resize": lambda row: "upsample"}),
    # added within schema 3: the step budget's columns (budget.py), not recorded before
    Upgrade(None, dict.fromkeys(("steps", "eval_points", "val_subset"), lambda row: None)),
)
SCHEMA_VERSION = 1 + max(u.version for u in UPGRADES if u.version is not None)


def added_after(version: int | None) -> tuple[str, ...]:
    """The columns the upgrade of ``version`` adds (None: those added without a schema bump)."""
    return next(tuple(u.adds) for u in UPGRADES if u.version == version)


ADDED_AFTER_V1, ADDED_AFTER_V2, ADDED_IN_V2 = added_after(1), added_after(2), added_after(None)
ADDED_COLUMNS = tuple(c for u in UPGRADES for c in u.adds)  # the columns an older row may lack
CONSULTED = tuple(dict.fromkeys(("schema_version",) + tuple(c for u in UPGRADES for c in u.reads)))
INTEGERS = ("world_size", "schema_version")  # set in every upgraded row, and integers


def upgrade_table(table: pa.Table, columns: list[str]) -> pa.Table:
    """``table``'s rows, of any schema version, with ``columns`` in that order: where a row written before a column
    existed has it null, it is filled in as ``UPGRADES`` say; a column no row has is null. The row's own columns that
    the upgrades consult (``CONSULTED``) must be in ``table`` where it has rows of older schemas."""
    return _upgraded(table, columns)[0]


def upgrade_frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    """``upgrade_table`` as a DataFrame: a column that an upgrade gave values holds Python objects (None where
    null, as a string column of pandas would not), and ``INTEGERS`` are int64."""
    upgraded, filled = _upgraded(table, columns)
    df = upgraded.to_pandas()
    for column in filled:
        df[column] = pd.Series(upgraded.column(column).to_pylist(), index=df.index, dtype=object)
    for column in (c for c in INTEGERS if c in columns):
        df[column] = df[column].astype(int)
    return df


def _upgraded(table: pa.Table, columns: list[str]) -> tuple[pa.Table, set[str]]:
    """``upgrade_table``'s table, and the columns in which an upgrade put a value other than None."""
    n, names = table.num_rows, table.column_names
    version = table.column("schema_version") if "schema_version" in names else pa.nulls(n, pa.int64())
    written_by = pc.fill_null(version.cast(pa.int64()), 1).to_numpy(zero_copy_only=False)  # none: schema 1
    out = {c: table.column(c) if c in names else pa.nulls(n) for c in columns}
    filled: set[str] = set()
    for upgrade in UPGRADES:
        for column, value in upgrade.adds.items():
            if column not in out:
                continue
            lacking = pc.is_null(out[column]).to_numpy(zero_copy_only=False)
            if upgrade.version is not None:
                lacking = lacking & (written_by <= upgrade.version)
            if lacking.any():
                reads = table.select([c for c in upgrade.reads if c in names])
                out[column], gave = _filled(out[column], lacking, value, reads)
                filled |= {column} if gave else set()
    return (pa.table(out) if columns else table.select([])), filled


def _filled(current: pa.ChunkedArray | pa.Array, rows: np.ndarray, value: Callable,
            reads: pa.Table) -> tuple[pa.Array, bool]:
    """``current`` with ``value(row)`` in the ``rows`` marked (a boolean mask), ``row`` holding the columns of
    ``reads``, and whether any of those values is not None. The values keep the column's type unless it had none
    (a column of nulls only)."""
    at = rows.nonzero()[0]
    read = reads.take(pa.array(at)).to_pylist() if reads.num_columns else [{}] * len(at)
    values = current.to_pylist()
    gave = False
    for i, row in zip(at, read):
        values[i] = value(row)
        gave = gave or values[i] is not None
    return pa.array(values, type=None if pa.types.is_null(current.type) else current.type), gave


# ------------------------------------------------------------------------------------------------ recipe keys


def _always(section: dict[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Legacy:
    """Marks a recipe key added after runs were saved: a saved recipe lacking it gets ``value``, which reproduces
    what that run computed, where ``applies`` holds for the key's section (a mapping, as saved); elsewhere the
    key's default."""

    value: Any
    applies: Callable[[dict[str, Any]], bool] = field(default=_always)


@dataclass(frozen=True)
class HashOmitted:
    """Marks a recipe key that the run-id hash leaves out while ``when(value, recipe)`` holds: a key added after
    runs were saved, left out while it holds what the configurations from before it had, which keep their ids."""

    when: Callable[[Any, Any], bool]


def omitted_while(value: Any) -> HashOmitted:
    """Left out of the hash while the key holds ``value`` (the key's default: what runs before it had)."""
    return HashOmitted(lambda current, recipe: current == value)


def _marked(model: type[BaseModel], kind: type) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path of keys, marker) of every field of ``model``, and of its sections', that carries a ``kind`` marker."""
    for name, info in model.model_fields.items():
        for marker in info.metadata:
            if isinstance(marker, kind):
                yield (name,), marker
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            for path, marker in _marked(info.annotation, kind):
                yield (name, *path), marker


def fill_legacy(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe (``data``, parsed JSON of the ``model`` schema) with the ``Legacy`` value of each marked key
    it lacks, in place. A section that is not a mapping is left to the schema's validation to name."""
    for path, marker in _marked(model, Legacy):
        *sections, key = path
        node: Any = data
        for section in sections:
            node = node.setdefault(section, {}) if isinstance(node, dict) else None
        if isinstance(node, dict) and key not in node and marker.applies(node):
            node[key] = marker.value
    return data


def hash_view(recipe: BaseModel, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (``recipe`` dumped as JSON, in part) without the ``HashOmitted`` keys whose condition holds, in
    place; a key or section ``config`` no longer has is skipped."""
    for path, marker in _marked(type(recipe), HashOmitted):
        value: Any = recipe
        for key in path:
            value = getattr(value, key)
        *sections, key = path
        node: Any = config
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and marker.when(value, recipe):
            del node[key]
    return config
