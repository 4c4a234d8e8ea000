"""One-line messages for a recipe that fails validation: the layer (file, preset section, flag or --set) that set
the key, the key and its value, and what is allowed there."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import short, short_text


def source_of(loc: tuple, layers: list[tuple[str, dict]]) -> str:
    for source, layer in reversed(layers):
        node: Any = layer
        for key in loc:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return source
    return "recipe"


def explain(error: ValidationError, layers: list[tuple[str, dict]], root: type[BaseModel]) -> str:
    """The first problem of ``error`` (validating the merge of ``layers`` against the schema ``root``), in a line;
    the value and pydantic's message are bounded (``errors.short``), whatever the value's size."""
    first = error.errors()[0]
    loc = tuple(str(p) for p in first["loc"] if not isinstance(p, int))
    key = ".".join(loc)
    source = source_of(loc, layers)
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        valid = ", ".join(parent.model_fields) if parent else ""
        return f"{source}: unknown key '{key}' (value {short(value)}); valid keys here: {valid}"
    if first["type"] == "missing" and isinstance(first["loc"][-1], int):  # a list one item too short
        return f"{source}: bad value for '{key}': {short(value)} (too short: item {first['loc'][-1] + 1} is missing)"
    if first["type"] == "missing":
        return f"{source}: required key '{key}' is missing"
    if first["type"] == "value_error" and isinstance(value, dict):  # a section's own check: its message says it all
        return f"{source}: {short_text(first['msg'].removeprefix('Value error, '))}"
    return f"{source}: bad value for '{key}': {short(value)} ({short_text(first['msg'].removeprefix('Value error, '))})"


def _model_at(root: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    model = root
    for key in loc:
        field = model.model_fields.get(key)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model
