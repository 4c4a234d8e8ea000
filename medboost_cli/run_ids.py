"""Run ids: ``TASK-BACKBONE-ARM-CONFIGHASH-sSEED``, made and taken apart here only.

The configuration hash (``config_digest``) covers everything that defines the experiment except the seed (the
recipe says what that is: ``Recipe.config_hash``), so the id without its seed (``cell_id``) names one
configuration, which is one cell of a report. A run id is also a file name under a results folder, so it is made
of letters, digits and ``._+-`` only (``check_run_id``)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .errors import ConfigError

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def config_digest(config: dict[str, Any]) -> str:
    """The 8 hex digits of a configuration (a JSON-able mapping): the same mapping gives the same digits."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]


def make_run_id(task: str, backbone: str, booster: str, config_hash: str, seed: int) -> str:
    return check_run_id(f"{task}-{backbone}-{booster}-{config_hash}-s{seed}")


def cell_id(run_id: str) -> str:
    """A run id without its seed suffix: the same for every seed of one configuration (one report cell)."""
    return run_id.rsplit("-s", 1)[0]


def is_run_id(run_id: Any) -> bool:
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is made of letters, digits and ``._+-`` (so it can never name a path outside the folder)."""
    if not is_run_id(run_id):
        raise ConfigError(f"'{run_id}' is not a run id (letters, digits and . _ + - only, at most 200 characters)")
    return run_id
