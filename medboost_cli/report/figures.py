"""The report's figure: test AUC per dataset without and with the booster, ours beside the paper's (Figure 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import save_figure
from ..paper import TITLES
from .gather import Config


def _groups(configs: list[Config]) -> list[tuple]:
    """(label, our baseline cell, our booster cell, paper baseline, paper booster) per task and backbone of every
    ``main`` table with results."""
    groups = []
    for config in configs:
        for spec in (s for s in config.study.tables if s.kind == "main"):
            base, boost = config.study.table_variants(spec)
            for (task, backbone, variant), cell in config.cells.items():
                boosted = config.cell(task, backbone, boost)
                if variant != base or not (cell.n or boosted.n):
                    continue
                ref = [spec.paper_value(task, v, "auc", backbone) for v in (base, boost)]
                label = f"{TITLES.get(task, task)}\n{TITLES.get(backbone, backbone)}" + (
                    f"\n{config.label}" if config.preset else "")
                groups.append((label, cell, boosted, *ref))
    return groups


def figure1(configs: list[Config], out_dir: Path) -> list[str]:
    """Paper Figure 1: test AUC per dataset without and with R-LLM, our error bars beside the paper's values."""
    groups = _groups(configs)
    if not groups:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4.2))
    x = np.arange(len(groups))
    for offset, idx, name, color in ((-0.2, 1, "without R-LLM (ours)", "#8da0cb"), (0.2, 2, "with R-LLM (ours)", "#fc8d62")):
        means = [g[idx].mean("auc") if g[idx].n else np.nan for g in groups]
        stds = [g[idx].std("auc") if g[idx].n else 0 for g in groups]
        ax.bar(x + offset, means, 0.38, yerr=stds, capsize=3, label=name, color=color)
    for offset, idx, name, marker in ((-0.2, 3, "without (paper)", "v"), (0.2, 4, "with (paper)", "^")):
        ax.scatter(x + offset, [g[idx] if g[idx] is not None else np.nan for g in groups], marker=marker, color="k",
                   zorder=3, label=name)
    ax.set_xticks(x, [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("test AUC (%)")
    values = [v for g in groups for v in (g[1].mean("auc"), g[2].mean("auc"), g[3], g[4]) if v is not None]
    ax.set_ylim(max(0, min(values) - 10), 100)
    ax.set_title("Figure 1: AUC per dataset without and with the R-LLM booster")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"figure1.{ext}"
        save_figure(fig, path, dpi=150)
        paths.append(str(path))
    plt.close(fig)
    return paths
