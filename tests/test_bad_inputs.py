"""Bad inputs as classes, each refused with one short line, its class's exit code, nothing written, and fast:

* YAML that expands without end (an alias bomb) or gives a key twice, in a recipe, a ``--set`` value or an
  ``ablate --profile``; values that print long (every value an error line quotes goes through ``errors.short``);
* recipe values the schema accepts as types but no model can use: sizes of 0, heads that do not divide the width, a
  patch larger than the input, a warmup past any float, a zoom range that mirrors the image, devices medboost does
  not train on, a weights file that is not one;
* sizes checked before allocation: an npz or .npy mask header claiming more than its member or file holds, a DICOM
  declaring a huge image, cohort and labels.csv class indices, ``prepare dicom --size``, an LM layer larger than
  the available memory;
* paths: labels.csv rows leaving the DICOM folder, names over the file system's limits;
* a data file that is not a regular file (a FIFO would block the MD5 check forever);
* a test split on which the run's test AUC would be NaN; ``runs`` over a missing folder or a status that no run
  has (a typo), which would list nothing and look like no runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import medboost_cli.engine as engine_mod
from medboost_cli.errors import short

from .conftest import write_medmnist
from .test_cli import assert_one_line_error, run

# A value that is a billion items once its aliases are expanded: 9 levels of 9 references, 300 bytes of YAML.
BOMB = "[" + ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]" for i in range(9)) + "]"
MAX_LINE = 600  # characters: a long line is as unreadable as a traceback
MAX_SECONDS = 20


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def _refused(args: list, fragments: list[str], code: int, tmp: Path) -> None:
    """``medboost ARGS`` ends at once in one short error line, and writes nothing under ``tmp/results``."""
    results = tmp / "results"
    before = _snapshot(results)
    start = time.monotonic()
    given = "--results-dir" in map(str, args) or args[0] == "prepare"
    result = run(*args) if given else run(*args, "--results-dir", results)
    assert time.monotonic() - start < MAX_SECONDS
    assert_one_line_error(result, *fragments, code=code)
    assert len(result.stderr.strip()) < MAX_LINE, result.stderr
    assert _snapshot(results) == before


# ------------------------------------------------------------------------------------------------ YAML


def _recipe(tmp: Path, text: str) -> list:
    return ["train", "breast", "--preset", "cpu", "--recipe", _write(tmp / "r.yaml", text),
            "--data-dir", tmp / "none"]


def _profile(tmp: Path, text: str) -> list:
    return ["ablate", "residual", "--launcher", "slurm", "--profile", _write(tmp / "lab.yaml", text), "--dry-run",
            "--seeds", "1", "--preset", "cpu"]


TRAIN = ["train", "breast", "--preset", "cpu"]
YAML_CASES = {
    "recipe-alias-bomb": (lambda t: _recipe(t, f"extends: base/2d.yaml\ntask: breastmnist\nextra: {BOMB}\n"),
                          ["r.yaml line 1: holds more than 100000 values (aliases expanded"]),
    "recipe-duplicate-key": (lambda t: _recipe(t, "extends: base/2d.yaml\nseed: 0\nseed: 1\n"),
                             ["r.yaml line 3: key 'seed' is given twice (first on line 2); keep one"]),
    "recipe-duplicate-nested-key": (lambda t: _recipe(t, "train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n"),
                                    ["r.yaml line 4: key 'lr' is given twice (first on line 2)"]),
    "set-alias-bomb": (lambda t: TRAIN + ["--set", f"data.scale={BOMB}"],
                       ["--set data.scale: holds more than 100000 values (aliases expanded"]),
    "set-duplicate-key": (lambda t: TRAIN + ["--set", "train={lr: 1, lr: 2}"],
                          ["--set train: key 'lr' is given twice"]),
    "profile-alias-bomb": (lambda t: _profile(t, f"partition: {BOMB}\n"),
                           ["lab.yaml line 1: holds more than 100000 values"]),
    "profile-duplicate-key": (lambda t: _profile(t, "partition: a\npartition: b\n"),
                              ["lab.yaml line 2: key 'partition' is given twice"]),
    "long-number": (lambda t: TRAIN + ["--set", f"train.epochs={'9' * 100_000}"],
                    ["--set train.epochs: a number of 100000 digits is longer than any recipe value"]),
    "long-list-printed-short": (lambda t: TRAIN + ["--set", f"train.epochs=[{', '.join(['7'] * 50_000)}]"],
                                ["bad value for 'train.epochs': [7, 7, 7, 7, ...]"]),
    "long-string-printed-short": (lambda t: TRAIN + ["--set", f"train.select_metric={'x' * 100_000}"],
                                  ["bad value for 'train.select_metric': 'xxx", "...x"]),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_yaml_that_expands_or_repeats_a_key_and_long_values_are_one_short_line(tmp_path, case):
    make, fragments = YAML_CASES[case]
    _refused(make(tmp_path), fragments, 2, tmp_path)


def test_anchors_and_aliases_of_a_normal_size_are_read(tmp_path):
    from medboost_cli.recipe_yaml import load_yaml
    from medboost_cli.recipes import load_recipe, recipes_dir

    path = _write(tmp_path / "r.yaml", f"extends: {recipes_dir() / 'breast.yaml'}\n"
                                       "data: {scale: &s [0.5, 1.0]}\ntrain: {epochs: &e 3, patience: *e}\n")
    recipe = load_recipe("breast", recipe_file=path)
    assert (recipe.data.scale, recipe.train.epochs, recipe.train.patience) == ((0.5, 1.0), 3, 3)
    # a merge key, then a key that overrides one it brought: not a key given twice
    assert load_yaml("base: &b {epochs: 4, lr: 0.01}\ntrain: {<<: *b, epochs: 5}\n")["train"] == \
        {"epochs": 5, "lr": 0.01}


def test_short_bounds_any_value():
    nested: list = ["lol"]
    for _ in range(30):
        nested = [nested] * 9
    for value in (nested, 10**5000, "x" * 10**6, {str(i): i for i in range(10**4)}, b"\0" * 10**6):
        assert len(short(value)) < 200


# ------------------------------------------------------------------------------------------------ recipe values


@pytest.fixture(scope="module")
def breast_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_medmnist(root, "breast")
    return root


def _weights(tmp: Path, name: str, content: bytes) -> list[str]:
    return ["backbone.pretrained=true", f"backbone.weights={_write(tmp / name, content)}"]


# (sets, fragments, exit code); trained with vit-mini on a synthetic breast file.
VALUE_CASES = {
    "in-chans-0": (["backbone.in_chans=0"], ["bad value for 'backbone.in_chans': 0", "greater than or equal to 1"], 2),
    "patch-size-0": (["backbone.patch_size=0"], ["bad value for 'backbone.patch_size': 0"], 2),
    "depth-0": (["backbone.depth=0"], ["bad value for 'backbone.depth': 0"], 2),
    "heads-0": (["backbone.heads=0"], ["bad value for 'backbone.heads': 0"], 2),
    "dim-huge": (["backbone.dim=1000000000"], ["bad value for 'backbone.dim'", "less than or equal to 65536"], 2),
    "mlp-ratio-0": (["backbone.mlp_ratio=0"], ["bad value for 'backbone.mlp_ratio': 0"], 2),
    "dim-not-divisible-by-heads": (["backbone.dim=100"], ["backbone.dim=100 is not divisible by backbone.heads=3"], 2),
    "dim-and-heads": (["backbone.dim=100", "backbone.heads=8"],
                      ["backbone.dim=100 is not divisible by backbone.heads=8"], 2),
    "patch-larger-than-input": (["backbone.patch_size=64"], ["backbone.patch_size=64 is larger than the input"], 2),
    "warmup-1e308": (["train.warmup_epochs=1e308"],
                     ["bad value for 'train.warmup_epochs'", "less than or equal to 1000000"], 2),
    "scale-negative": (["data.scale=[-1,50]"], ["bad value for 'data.scale': [-1, 50]", "0 < low <= high <= 1"], 2),
    "scale-reversed": (["data.scale=[0.9,0.5]"], ["bad value for 'data.scale'", "0 < low <= high <= 1"], 2),
    "device-meta": (["train.device=meta"], ["train.device='meta': medboost trains on cpu, cuda, mps devices"], 2),
    "device-junk": (["train.device=gpu9"], ["train.device='gpu9' is not a device"], 2),
    "junk-safetensors": (lambda t: _weights(t, "w.safetensors", b"\x08" + b"\0" * 7 + b"{junk"),
                         ["w.safetensors: not a readable safetensors file"], 4),
    "junk-pth": (lambda t: _weights(t, "w.pth", b"not a pickle at all"),
                 ["w.pth is neither a safetensors file", "download the weights again"], 4),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_recipe_values_no_model_can_use_are_refused_before_training(tmp_path, breast_data, monkeypatch, case):
    sets, fragments, code = VALUE_CASES[case]
    sets = sets(tmp_path) if callable(sets) else sets
    monkeypatch.setattr(engine_mod, "make_optimizer", lambda *a: pytest.fail("training started"))
    if code == 2:  # the schema's and the backbone family's checks come before the data is read
        monkeypatch.setattr(engine_mod, "load_dataset", lambda *a, **k: pytest.fail("data read"))
    args = TRAIN + ["--data-dir", breast_data, "--set", "data.verify=false"] + [a for s in sets for a in ("--set", s)]
    _refused(args, fragments, code, tmp_path)


def test_mps_is_refused_where_there_is_none(tmp_path, breast_data):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    _refused(TRAIN + ["--data-dir", breast_data, "--set", "train.device=mps"],
             ["train.device='mps' but no MPS device is available here"], 2, tmp_path)


def test_vit_specs_match_what_timm_builds():
    """The sizes the ViT family checks before timm builds a model are timm's own."""
    import timm
    import torch

    from medboost_cli.models.backbones.vit import TIMM_VITS

    for spec in TIMM_VITS.values():
        with torch.device("meta"):
            vit = timm.create_model(spec.timm_name, img_size=spec.img_size, **dict(spec.overrides))
        assert (vit.embed_dim, vit.blocks[0].attn.num_heads, vit.patch_embed.patch_size[0]) == \
            (spec.dim, spec.heads, spec.patch), spec


# ------------------------------------------------------------------------------------------------ sizes and paths


def _npz_claiming(path: Path, key: str, shape: tuple[int, ...]) -> None:
    """Rewrite ``key``'s .npy header inside the npz at ``path`` to claim ``shape`` (its data unchanged)."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    old = members[f"{key}.npy"]
    header_len = int.from_bytes(old[8:10], "little")
    header = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode()
    header = header.ljust(header_len - 1) + b"\n"
    assert len(header) == header_len
    members[f"{key}.npy"] = old[:10] + header + old[10 + header_len:]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _huge_header(tmp: Path) -> list:
    path = write_medmnist(tmp / "d", "breast")
    _npz_claiming(path, "train_images", (10**9, 28, 28))
    return TRAIN + ["--data-dir", tmp / "d", "--set", "data.verify=false"]


def _fifo(verify: str) -> Callable[[Path], list]:
    def make(tmp: Path) -> list:
        (tmp / "d").mkdir()
        os.mkfifo(tmp / "d" / "breastmnist.npz")
        return TRAIN + ["--data-dir", tmp / "d", "--set", f"data.verify={verify}"]

    return make


def _one_class_test(tmp: Path) -> list:
    path = write_medmnist(tmp / "d", "breast")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["test_labels"] = np.zeros_like(arrays["test_labels"])
    np.savez(path, **arrays)
    return TRAIN + ["--data-dir", tmp / "d", "--set", "data.verify=false"]


def _cohort_label(tmp: Path) -> list:
    from medboost_cli.cohort_file import write_cohort

    n = 8
    write_cohort(tmp / "c.npz", {"images": np.zeros((n, 28, 28), np.uint8), "labels": np.full((n, 1), 10**9),
                                 "patient_ids": np.array([str(i) for i in range(n)]),
                                 "files": np.array([f"{i}.dcm" for i in range(n)]),
                                 "crop_boxes": np.zeros((n, 4), np.int32)}, {"format": "medboost-cohort"})
    return ["train", tmp / "c.npz", "--folds", "2", "--preset", "cpu"]


def _labels_csv(rows: list[tuple[str, str, object]], *extra) -> Callable[[Path], list]:
    def make(tmp: Path) -> list:
        from .dicom_fixtures import write_dicom, write_labels

        write_dicom(tmp / "dicom" / "a.dcm", np.zeros((64, 64), np.uint16))
        write_dicom(tmp / "outside.dcm", np.zeros((64, 64), np.uint16))
        write_labels(tmp / "labels.csv", [(f.format(tmp=tmp), p, label) for f, p, label in rows])
        return ["prepare", "dicom", tmp / "dicom", "--labels", tmp / "labels.csv", "--out", tmp / "results" / "o.npz",
                *extra]

    return make


def _dicom_declaring(rows: int, cols: int, mask_shape: tuple[int, ...] | None = None) -> Callable[[Path], list]:
    """``prepare dicom`` of one file whose Rows x Columns tags say ``rows`` x ``cols`` (its pixel data 64 x 64),
    with a .npy lung mask whose header claims ``mask_shape`` (its data 64 bytes) where given."""
    def make(tmp: Path) -> list:
        import pydicom

        from .dicom_fixtures import write_dicom, write_labels

        path = write_dicom(tmp / "dicom" / "a.dcm", np.full((64, 64), 100, np.uint16))
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = rows, cols
        ds.save_as(path)
        write_labels(tmp / "labels.csv", [("a.dcm", "p", 0)])
        masks = []
        if mask_shape is not None:
            (tmp / "masks").mkdir()
            with open(tmp / "masks" / "a.npy", "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": mask_shape})
                f.write(b"\1" * 64)
            masks = ["--masks", tmp / "masks"]
        return ["prepare", "dicom", tmp / "dicom", "--labels", tmp / "labels.csv", "--out", tmp / "results" / "o.npz",
                *masks]

    return make


LONG = "x" * 300
SIZE_AND_PATH_CASES = {
    "npy-header-1e9-images": (_huge_header, ["train_images claims shape (1000000000, 28, 28)",
                                             "holds 37,632 bytes"], 3),
    "cohort-label-1e9": (_cohort_label, ["c.npz: labels run from 1000000000 to 1000000000",
                                         "class indices are 0 to 999"], 3),
    "csv-label-1e20": (_labels_csv([("a.dcm", "p", 10**20)]),
                       ["labels.csv line 2: label 100000000000000000000 is not a class index 0 to 999"], 3),
    "csv-label-1e9": (_labels_csv([("a.dcm", "p", 10**9)]), ["label 1000000000 is not a class index"], 3),
    "prepare-size-100000": (_labels_csv([("a.dcm", "p", 0)], "--size", "100000"),
                            ["--size 100000: choose from 8 to 4096"], 2),
    "csv-absolute-path": (_labels_csv([("{tmp}/outside.dcm", "p", 0)]),
                          ["labels.csv line 2: path", "outside.dcm' leaves the folder", "without '..'"], 3),
    "csv-dotdot-path": (_labels_csv([("../outside.dcm", "p", 0)]),
                        ["labels.csv line 2: path '../outside.dcm' leaves the folder"], 3),
    "results-dir-name-too-long": (lambda t: TRAIN + ["--results-dir", t / LONG],
                                  ["--results-dir", "has a name of 300 bytes", "over the 255"], 2),
    "llm-name-too-long": (lambda t: TRAIN + ["--booster", "rllm", "--llm", t / LONG],
                          ["bad value for 'booster.llm'", "has a name of 300 bytes"], 2),
    "data-dir-name-too-long": (lambda t: TRAIN + ["--data-dir", t / LONG],
                               ["--data-dir", "has a name of 300 bytes"], 2),
    "dicom-rows-columns-65535": (_dicom_declaring(65535, 65535), [
        "a.dcm: declares an image of 65535 x 65535 pixels (Rows x Columns), more than the 16,384 a side may have",
        "remove it from labels.csv"], 3),
    "npy-mask-header-1e6-squared": (_dicom_declaring(64, 64, (10**6, 10**6)), [
        "a.npy claims shape (1000000, 1000000) of uint8 (1,000,000,000,000 bytes) but holds 64 bytes"], 3),
    "fifo-data-file": (_fifo("true"), ["breastmnist.npz: is a FIFO (named pipe), not a regular file"], 3),
    "fifo-data-file-unverified": (_fifo("false"), ["breastmnist.npz: is a FIFO (named pipe)"], 3),
    "runs-status-typo": (lambda t: ["runs", "--status", "complete"],
                         ["--status", "'complete' is not one of 'running', 'completed', 'failed', 'interrupted' "
                          "(did you mean 'completed'?)"], 2),
    "runs-missing-folder": (lambda t: ["runs", "--results-dir", t / "missing"],
                            ["missing: no such results folder; point --results-dir"], 5),
    "one-class-test-split": (_one_class_test, ["in the test split all 24 samples are class 0",
                                               "test AUC is undefined", "test_auc = NaN"], 3),
}


@pytest.mark.parametrize("case", list(SIZE_AND_PATH_CASES))
def test_sizes_paths_and_special_files_are_refused_before_allocation(tmp_path, monkeypatch, case):
    make, fragments, code = SIZE_AND_PATH_CASES[case]
    monkeypatch.setattr(engine_mod, "build_model", lambda *a, **k: pytest.fail("model built"))
    _refused(make(tmp_path), fragments, code, tmp_path)


def test_an_lm_layer_larger_than_the_memory_is_refused(tmp_path, tiny_llama, breast_data, monkeypatch):
    """A config.json of hidden size 32768 and intermediate size 120000 (a 16G-parameter layer, within what a
    config may describe) with booster.llm_init=random: refused against the available memory, here 8 GiB."""
    import psutil

    lm = tmp_path / "lm"
    shutil.copytree(tiny_llama[0], lm)
    config = json.loads((lm / "config.json").read_text())
    config.update(hidden_size=32768, intermediate_size=120000, num_attention_heads=32, num_key_value_heads=8,
                  head_dim=1024)
    (lm / "config.json").write_text(json.dumps(config))
    memory = namedtuple("memory", "available total")(8 * 2**30, 16 * 2**30)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)
    _refused(TRAIN + ["--data-dir", breast_data, "--booster", "rllm", "--llm", lm, "--set", "data.verify=false",
                      "--set", "booster.llm_init=random", "--set", "booster.layer=0", "--set", "booster.dtype=fp32"],
             [str(lm), "one layer of", "more than the 8.0 GiB of memory available"], 4, tmp_path)
