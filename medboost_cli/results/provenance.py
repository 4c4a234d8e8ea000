"""Provenance of a row: the versions of the packages a run used and the commit of the medboost checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path


@cache
def package_versions() -> str:
    versions = {"python": sys.version.split()[0]}
    for name in ("medboost", "torch", "timm", "transformers", "numpy", "medmnist", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return json.dumps(versions, sort_keys=True)


@cache
def git_commit() -> str | None:
    """The commit of the medboost checkout that runs (with '-dirty' for uncommitted changes), if it is one."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
