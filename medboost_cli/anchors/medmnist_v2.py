"""MedMNIST v2's benchmark (Yang et al., Sci Data 2023): test AUC and ACC of ResNet-18/50 at 28 and 224 (2D; 224 is
28 upsampled), ResNet-18/50 with 2.5D, 3D and ACS convolutions (3D, 28^3), auto-sklearn, AutoKeras and Google
AutoML Vision, on every task medboost has a recipe for (``medmnist_v2.tsv``, from the site's benchmark tables).

How they were made (MedMNIST/experiments, train_and_eval_pytorch.py for 2D and 3D): the ResNets are trained from
scratch (``pretrained=False``; 3D: the converted 2D ResNet, untrained) with Adam, lr 1e-3, 100 epochs, the model
kept where validation AUC peaks, one run per number. (That script keeps a reference to the model, not a copy,
as its "best model", so the number it reports is in effect the last epoch's; the table says what the paper
states, validation selection.) The AutoML tools' own search protocols are not stated on the site: their
pretrained and selection aspects are "not stated" and mark nothing.
"""

from __future__ import annotations

from .protocol import Protocol
from .source import Anchor, AnchorSource, number

KEY = "medmnist-v2"
AUTOML = ("auto-sklearn", "AutoKeras", "Google AutoML Vision")


def protocol(method: str, size: int, side: int) -> Protocol:
    """The protocol of one of the benchmark's methods: the ResNets from scratch, selected on validation AUC."""
    resize = "upsample" if side != size else None
    if method in AUTOML:
        return Protocol(size=size, input=side, resize=resize, seeds=1)
    return Protocol(size=size, input=side, resize=resize, pretrained=False, seeds=1, selection="val")


def read(rows: list[dict]) -> list[Anchor]:
    return [Anchor(KEY, r["task"], r["method"], protocol(r["method"], int(r["size"]), int(r["input"])),
                   acc=number(r["acc"]), auc=number(r["auc"])) for r in rows]


SOURCE = AnchorSource(
    key=KEY, citation="MedMNIST v2 (Yang et al. 2023)",
    reference="Yang et al., MedMNIST v2, Sci Data 10:41 (2023), doi:10.1038/s41597-022-01721-8; values from "
              "the benchmark tables of medmnist.com (MedMNIST/medmnist.github.io, index.html at 74c5d44; "
              "NoduleMNIST3D after the site's 2022-04-27 correction)",
    about="ResNet-18/50 (28 and 28 upsampled to 224; 3D: 2.5D, 3D and ACS convolutions at 28^3) trained from "
          "scratch, each kept at the epoch of its best AUC on the validation split, and three AutoML tools; one run "
          "per number",
    table="medmnist_v2.tsv", read=read)
