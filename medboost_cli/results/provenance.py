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


def run_manifest(data_path: Path | None, device: str | None, lm_source: str | None,
                 frozen_sha256: str | None) -> str:
    """A run's manifest (the ``manifest_json`` column): the data file with its MD5 (download.known_md5: the one a
    verified load computed in this process), the LM weights (their source and the sha256 of the frozen tensors the
    run used; the checkpoint files themselves are not hashed again), medboost's version and commit, the library
    versions and the machine (CPU and the run's device)."""
    from ..download import known_md5
    from ..errors import DataError
    from ..hardware import cpu_summary

    data = None
    if data_path is not None:
        try:
            data = {"file": Path(data_path).name, "md5": known_md5(Path(data_path))}
        except DataError:  # a file gone since it was read: the manifest says so instead of failing the run
            data = {"file": Path(data_path).name, "md5": None}
    versions = json.loads(package_versions())
    return json.dumps({
        "data": data, "lm": {"source": lm_source, "frozen_sha256": frozen_sha256} if lm_source else None,
        "medboost": {"version": versions.get("medboost"), "commit": git_commit()}, "versions": versions,
        "machine": {"cpu": cpu_summary(), "device": device},
    }, sort_keys=True)
