"""MedMNIST+ (Doerrich et al., Sci Rep 2025): 10 pretrained timm/torchvision models trained end-to-end, by linear
probing and used as kNN feature extractors, at sizes 28, 64, 128 and 224, mean ± std over 3 seeds. The package
keeps, per task, size and scheme, the best model by AUC and the best by ACC (``medmnist_plus.tsv``, derived from
the full transcription of the repository's result tables by ``derive``); kNN reports no AUC, so only its best ACC.

How they were made (rethinking-model-prototyping-MedMNISTPlus at b67b772, train.py and config.yaml): every image
zero-padded into the centre of a 224 canvas (no resizing), pretrained weights, AdamW lr 1e-4, up to 100 epochs
with early stopping on validation loss (patience 5), 3 seeds; kNN (k=11 on the frozen backbone's embeddings of the
training split) trains nothing and is deterministic, one number.
"""

from __future__ import annotations

from .protocol import Protocol
from .source import SCHEMES, Anchor, AnchorSource, number

KEY = "medmnist-plus"
INPUT = 224  # every size is padded to 224
TIES = "; "  # between the names of models that share the best value of a cell


def protocol(scheme: str, size: int) -> Protocol:
    trained = scheme != "kNN"
    return Protocol(size=size, input=INPUT, resize="pad" if size != INPUT else None, pretrained=True,
                    seeds=3 if trained else 1, selection="val loss" if trained else "none")


def read(rows: list[dict]) -> list[Anchor]:
    return [Anchor(KEY, r["task"], r["model"], protocol(r["scheme"], int(r["size"])), acc=number(r["acc"]),
                   auc=number(r["auc"]), acc_std=number(r["acc_std"]), auc_std=number(r["auc_std"]),
                   scheme=r["scheme"], best_by=r["best_by"]) for r in rows]


def derive(transcription: list[dict], tasks: dict[str, str]) -> list[dict]:
    """The packaged rows from the full transcription (columns dataset, model, scheme, input_size, acc_mean,
    acc_std, auc_mean, auc_std): for each task (``tasks``: medmnist flag -> medboost's short name), size and
    scheme, the model with the highest mean AUC and the one with the highest mean ACC (models that tie are all
    named, the first one's numbers kept)."""
    out = []
    for flag, task in tasks.items():
        for size in sorted({int(r["input_size"]) for r in transcription if r["dataset"] == flag}):
            for scheme in SCHEMES:
                cell = [r for r in transcription
                        if (r["dataset"], int(r["input_size"]), r["scheme"]) == (flag, size, scheme)]
                for metric in ("auc", "acc"):
                    scored = [r for r in cell if number(r[f"{metric}_mean"]) is not None]
                    if not scored:
                        continue
                    top = max(number(r[f"{metric}_mean"]) for r in scored)
                    best = [r for r in scored if number(r[f"{metric}_mean"]) == top]
                    first = best[0]
                    out.append({"task": task, "scheme": scheme, "size": str(size), "best_by": metric,
                                "model": TIES.join(r["model"] for r in best), "acc": first["acc_mean"],
                                "acc_std": first["acc_std"], "auc": first["auc_mean"], "auc_std": first["auc_std"]})
    return out


SOURCE = AnchorSource(
    key=KEY, citation="MedMNIST+ (Doerrich et al. 2025)",
    reference="Doerrich et al., Rethinking model prototyping through the MedMNIST+ dataset collection, Sci Rep "
              "15:7669 (2025), arXiv 2404.15786; values from sdoerrich97/rethinking-model-prototyping-MedMNISTPlus, "
              "assets/benchmark_results_<dataset>.png at b67b772",
    about="the best of 10 pretrained models per task, size (28, 64, 128, 224, zero-padded to 224) and training "
          "scheme (end-to-end, linear probing, kNN), by AUC and by ACC; early stopping on validation loss; mean "
          "± std over 3 seeds (kNN: one deterministic number, no AUC)",
    table="medmnist_plus.tsv", read=read)
