"""The anchors (medboost_cli.anchors): the packaged numbers against the transcription of their sources, the
best-per-scheme rows against the full MedMNIST+ grid, and the protocol marks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medboost_cli.anchors import SOURCES, Protocol, anchor_source, anchors, anchors_for, marks
from medboost_cli.anchors import medmnist_plus
from medboost_cli.anchors.source import SCHEMES
from medboost_cli.errors import ConfigError
from medboost_cli.tasks import SHORT_NAMES


def _transcription() -> Path | None:
    """The folder of the transcribed source tables (shared/anchors beside a checkout), or None in a clone without it."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        folder = parent / "shared" / "anchors"
        if (folder / "medmnist_plus.tsv").is_file() and (folder / "medmnist_v2.tsv").is_file():
            return folder
    return None


TRANSCRIPTION = _transcription()
needs_transcription = pytest.mark.skipif(TRANSCRIPTION is None, reason="the transcribed source tables "
                                         "(shared/anchors/medmnist_v2.tsv, medmnist_plus.tsv) are not beside this "
                                         "checkout; the sample test below checks the packaged numbers without them")

# (source, task, method, scheme, best_by, acc, auc, where the transcription has it (file:line, as read)).
SAMPLE = [
    ("medmnist-v2", "breast", "ResNet-18 (28)", None, None, 0.863, 0.901, "medmnist_v2.tsv:44"),
    ("medmnist-v2", "breast", "ResNet-18 (224)", None, None, 0.833, 0.891, "medmnist_v2.tsv:45"),
    ("medmnist-v2", "pneumonia", "ResNet-18 (28)", None, None, 0.854, 0.944, "medmnist_v2.tsv:30"),
    ("medmnist-v2", "derma", "Google AutoML Vision", None, None, 0.768, 0.914, "medmnist_v2.tsv:22"),
    ("medmnist-v2", "oct", "ResNet-50 (224)", None, None, 0.776, 0.958, "medmnist_v2.tsv:26"),
    ("medmnist-v2", "retina", "auto-sklearn", None, None, 0.515, 0.690, "medmnist_v2.tsv:41"),
    ("medmnist-v2", "organa", "AutoKeras", None, None, 0.905, 0.994, "medmnist_v2.tsv:70"),
    ("medmnist-v2", "nodule3d", "ResNet-18+3D", None, None, 0.844, 0.863, "medmnist_v2.tsv:95"),
    ("medmnist-v2", "fracture3d", "ResNet-50+ACS", None, None, 0.517, 0.750, "medmnist_v2.tsv:107"),
    ("medmnist-v2", "adrenal3d", "ResNet-18+3D", None, None, 0.721, 0.827, "medmnist_v2.tsv:111"),
    ("medmnist-v2", "adrenal3d", "auto-sklearn", None, None, 0.802, 0.828, "medmnist_v2.tsv:116"),
    ("medmnist-v2", "vessel3d", "ResNet-18+ACS", None, None, 0.928, 0.930, "medmnist_v2.tsv:120"),
    ("medmnist-plus", "breast", "AlexNet", "end-to-end", "auc", 0.8654, 0.8908, "medmnist_plus.tsv:3"),
    ("medmnist-plus", "breast", "VGG16", "end-to-end", "acc", 0.8782, 0.9021, "medmnist_plus.tsv:12"),
    ("medmnist-plus", "breast", "DenseNet-121", "end-to-end", "auc", 0.8590, 0.9056, "medmnist_plus.tsv:15"),
    ("medmnist-plus", "breast", "AlexNet", "end-to-end", "auc", 0.9060, 0.9397, "medmnist_plus.tsv:23"),
    ("medmnist-plus", "derma", "DenseNet-121", "end-to-end", "acc", 0.8474, 0.9626, "medmnist_plus.tsv:155"),
    ("medmnist-plus", "derma", "DINO ViT-B/16", "end-to-end", "auc", 0.8131, 0.9650, "medmnist_plus.tsv:160"),
    ("medmnist-plus", "oct", "ViT-B/16", "linear probing", "auc", 0.8357, 0.9896, "medmnist_plus.tsv:317"),
    ("medmnist-plus", "organa", "DINO ViT-B/16", "linear probing", "acc", 0.9391, 0.9974, "medmnist_plus.tsv:420"),
    ("medmnist-plus", "pneumonia", "DINO ViT-B/16", "kNN", "acc", 0.8974, None, "medmnist_plus.tsv:600"),
    ("medmnist-plus", "retina", "VGG16", "end-to-end", "auc", 0.5417, 0.7535, "medmnist_plus.tsv:602"),
]
SAMPLE_SIZES = {"medmnist_plus.tsv:3": 28, "medmnist_plus.tsv:12": 64, "medmnist_plus.tsv:15": 64,
                "medmnist_plus.tsv:23": 128, "medmnist_plus.tsv:155": 224, "medmnist_plus.tsv:160": 224,
                "medmnist_plus.tsv:317": 224, "medmnist_plus.tsv:420": 64, "medmnist_plus.tsv:600": 224,
                "medmnist_plus.tsv:602": 28}


@pytest.mark.parametrize("source,task,method,scheme,best_by,acc,auc,line", SAMPLE, ids=[s[-1] for s in SAMPLE])
def test_a_sample_of_packaged_values_matches_the_transcription(source, task, method, scheme, best_by, acc, auc, line):
    found = [a for a in anchors_for(task, source) if a.method == method and a.scheme == scheme
             and a.best_by == best_by and (scheme is None or a.protocol.size == SAMPLE_SIZES[line])]
    assert found, f"{source} {task} {method} {scheme} ({line}) is not in the package"
    assert (found[0].acc, found[0].auc) == (acc, auc)


def test_the_sample_spans_both_sources_and_2d_and_3d():
    assert len(SAMPLE) >= 15 and {s[0] for s in SAMPLE} == {"medmnist-v2", "medmnist-plus"}
    assert any(s[1].endswith("3d") for s in SAMPLE) and any(not s[1].endswith("3d") for s in SAMPLE)


def test_every_task_with_a_recipe_has_v2_anchors_and_each_2d_task_medmnist_plus_per_size_and_scheme():
    for task in SHORT_NAMES:
        methods = {a.method for a in anchors_for(task, "medmnist-v2")}
        assert len(methods) == (8 if task.endswith("3d") else 7), task
        plus = anchors_for(task, "medmnist-plus")
        if task.endswith("3d"):
            assert not plus
            continue
        cells = {(a.scheme, a.protocol.size, a.best_by) for a in plus}
        want = {(s, size, m) for s in SCHEMES for size in (28, 64, 128, 224) for m in ("auc", "acc")
                if not (s == "kNN" and m == "auc")}
        assert cells == want, task


def _rows(name: str) -> list[dict]:
    with open(TRANSCRIPTION / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@needs_transcription
def test_the_best_rows_are_the_maxima_of_the_transcription():
    grid = _rows("medmnist_plus.tsv")
    flags = SHORT_NAMES  # medboost's short name -> the medmnist flag the transcription uses
    checked = 0
    for a in anchors("medmnist-plus"):
        cell = [r for r in grid if (r["dataset"], r["scheme"], int(r["input_size"])) ==
                (flags[a.task], a.scheme, a.protocol.size)]
        assert len(cell) == 10, (a.task, a.scheme, a.protocol.size)
        top = max(float(r[f"{a.best_by}_mean"]) for r in cell if r[f"{a.best_by}_mean"])
        assert a.value(a.best_by) == top
        best = [r for r in cell if r[f"{a.best_by}_mean"] and float(r[f"{a.best_by}_mean"]) == top]
        assert a.method == medmnist_plus.TIES.join(r["model"] for r in best)
        first = best[0]  # the named model's own numbers, the other metric included
        assert (a.acc, a.auc) == (float(first["acc_mean"]), float(first["auc_mean"]) if first["auc_mean"] else None)
        checked += 1
    assert checked == 6 * 4 * 5
    derived = medmnist_plus.derive(grid, {flags[t]: t for t in flags if not t.endswith("3d")})
    packaged = [(a.task, a.scheme, a.protocol.size, a.best_by, a.method, a.acc, a.auc) for a in anchors("medmnist-plus")]
    assert [(r["task"], r["scheme"], int(r["size"]), r["best_by"], r["model"], float(r["acc"]),
             float(r["auc"]) if r["auc"] else None) for r in derived] == packaged


@needs_transcription
def test_the_v2_table_is_the_transcription_for_every_recipe_task():
    want = {(SHORT_NAMES_BY_FLAG[r["dataset"]], r["method"]): (float(r["acc"]), float(r["auc"]), int(r["input_size"]))
            for r in _rows("medmnist_v2.tsv") if r["dataset"] in SHORT_NAMES_BY_FLAG}
    got = {(a.task, a.method): (a.acc, a.auc, a.protocol.input) for a in anchors("medmnist-v2")}
    assert got == want


SHORT_NAMES_BY_FLAG = {v: k for k, v in SHORT_NAMES.items()}


def test_marks_appear_where_protocols_differ_and_not_where_they_match():
    cpu = Protocol(size=28, input=28, pretrained=False, seeds=3, selection="val")
    resnet28 = next(a for a in anchors_for("breast", "medmnist-v2") if a.method == "ResNet-18 (28)")
    assert marks(cpu, resnet28.protocol) == "N"  # 3 seeds against one run
    assert marks(Protocol(28, 28, None, False, 1, "val"), resnet28.protocol) == ""
    plus64 = next(a for a in anchors_for("breast", "medmnist-plus")
                  if a.scheme == "end-to-end" and a.protocol.size == 64 and a.best_by == "auc")
    assert marks(cpu, plus64.protocol) == "SPV"  # 64 padded to 224, pretrained, early stopping on val loss
    upsampled = Protocol(size=64, input=224, resize="upsample", pretrained=True, seeds=3, selection="val loss")
    assert marks(upsampled, plus64.protocol) == "R"  # the same but for upsampling instead of padding
    paper2d = anchor_source("paper").protocol(2)
    assert marks(Protocol(28, 224, "upsample", True, 1, "val"), paper2d) == "V"  # the paper selected on test
    automl = next(a for a in anchors_for("breast", "medmnist-v2") if a.method == "AutoKeras")
    assert marks(Protocol(28, 28, None, True, 1, "test"), automl.protocol) == ""  # not stated: no mark


def test_an_unknown_source_is_one_clear_error():
    with pytest.raises(ConfigError, match="unknown anchor source 'medmnist-v3'; choose one of paper, medmnist-v2"):
        anchor_source("medmnist-v3")
    assert all(s.citation and s.reference and s.about for s in SOURCES.values())
