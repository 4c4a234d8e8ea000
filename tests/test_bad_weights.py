"""``backbone.weights`` checked before any data is read or model built (models/backbones/timm_weights.py): a file
that is missing, a folder, a FIFO, or in no format timm loads is one line with its class's exit code; the files
torch.save writes pass."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

import medboost_cli.engine as engine_mod

from .test_bad_inputs import TRAIN, _refused, _write, breast_data  # noqa: F401  (breast_data: a fixture)


def _zip_without_pickle(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/readme.txt", "no tensors here")
    return path


def _fifo_weights(path: Path) -> Path:
    os.mkfifo(path)
    return path


# backbone.weights: (how to make the file at the path given, fragments, exit code)
WEIGHTS_CASES = {
    "missing": (lambda p: p, ["backbone.weights: file not found:", "w.pth; point it at a local weights file"], 2),
    "folder": (lambda p: p.mkdir() or p, ["w.pth is a folder; point it at a weights file"], 2),
    "fifo": (_fifo_weights, ["w.pth is not a regular file (a FIFO"], 2),
    "zip-without-a-pickle": (_zip_without_pickle, ["w.pth is neither a safetensors file", "nor a torch file"], 4),
    "cut-zip": (lambda p: _write(p, b"PK\x03\x04" + b"\0" * 40), ["w.pth is neither a safetensors file"], 4),
}


@pytest.mark.parametrize("case", list(WEIGHTS_CASES))
def test_a_weights_file_is_checked_before_the_data_is_read(tmp_path, breast_data, monkeypatch, case):  # noqa: F811
    make, fragments, code = WEIGHTS_CASES[case]
    path = make(tmp_path / "w.pth")
    monkeypatch.setattr(engine_mod, "load_dataset", lambda *a, **k: pytest.fail("data read"))
    monkeypatch.setattr(engine_mod, "build_model", lambda *a, **k: pytest.fail("model built"))
    _refused(TRAIN + ["--data-dir", breast_data, "--set", "backbone.pretrained=true", "--set",
                      f"backbone.weights={path}"], fragments, code, tmp_path)


def test_weights_files_torch_writes_pass_the_check(tmp_path):
    import torch

    from medboost_cli.models.backbones.timm_weights import check_weights
    from medboost_cli.recipes import BackboneConfig

    state = {"w": torch.zeros(2)}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("zip.pth", "legacy.pth"):
        assert check_weights(BackboneConfig(pretrained=True, weights=str(tmp_path / name))) == tmp_path / name
    assert check_weights(BackboneConfig(pretrained=False, weights=str(tmp_path / "none.pth"))) is None  # not loaded
