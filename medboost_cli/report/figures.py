"""The report's figure (the paper's Figure 1): test AUC per dataset without and with the booster.

Ours are points with the 95% confidence interval of the mean over seeds (Student's t); one seed is a point labelled
n=1, without an interval (a single run has no spread). The paper's values are hollow markers, labelled as another
protocol (selected on the test split) and, under a preset or overrides, another configuration. The y-axis spans
the data: points, unlike bars, read correctly on an axis that does not start at zero.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..fileio import save_figure
from ..paper import TITLES
from .gather import Cell, Config

ARMS = (("without", "#4c72b0", "o"), ("with", "#dd5b2c", "s"))
TITLE = "Figure 1: test AUC without and with the R-LLM booster"


def _interval(cell: Cell) -> tuple[float | None, float | None]:
    """The 95% t-interval of the mean test AUC over the cell's seeds; (None, None) for one seed."""
    if cell.n < 2:
        return None, None
    from scipy import stats

    values = cell.values("auc")
    half = stats.t.ppf(0.975, cell.n - 1) * values.std(ddof=1) / np.sqrt(cell.n)
    return float(values.mean() - half), float(values.mean() + half)


def figure_data(configs: list[Config]) -> list[dict]:
    """One point per task x backbone x arm (without, with) x source (ours, paper) of every ``main`` table with
    results: its group label, mean, interval (None for one seed or the paper's) and n."""
    points = []
    for config in configs:
        for spec in (s for s in config.study.tables if s.kind == "main"):
            variants = config.study.table_variants(spec)
            for (task, backbone, variant), cell in config.cells.items():
                cells = [config.cell(task, backbone, v) for v in variants]
                if variant != variants[0] or not any(c.n for c in cells):
                    continue
                parts = [TITLES.get(task, task), config.backbone_title(backbone)]
                parts += [config.label] if config.preset or config.overrides else []
                label = "\n".join(textwrap.fill(part, 22) for part in parts)  # tick labels that do not overlap
                for (arm, _, _), v, c in zip(ARMS, variants, cells):
                    if c.n:
                        low, high = _interval(c)
                        points.append(dict(group=label, arm=arm, source="ours", mean=c.mean("auc"), low=low,
                                           high=high, n=c.n, other_config=bool(config.preset or config.overrides)))
                    paper = spec.paper_value(task, v, "auc", backbone)
                    if paper is not None:
                        points.append(dict(group=label, arm=arm, source="paper", mean=paper, low=None, high=None,
                                           n=None, other_config=bool(config.preset or config.overrides)))
    return points


def _draw(ax, points: list[dict], groups: list[str]) -> None:
    x = {g: i for i, g in enumerate(groups)}
    offsets = {("without", "ours"): -0.24, ("without", "paper"): -0.1, ("with", "ours"): 0.1,
               ("with", "paper"): 0.24}
    other = any(p["other_config"] for p in points)
    for arm, color, marker in ARMS:
        ours = [p for p in points if p["arm"] == arm and p["source"] == "ours"]
        xs = np.array([x[p["group"]] + offsets[(arm, "ours")] for p in ours])
        means = np.array([p["mean"] for p in ours])
        err = np.array([[p["mean"] - p["low"], p["high"] - p["mean"]] if p["low"] is not None else [np.nan, np.nan]
                        for p in ours]).T.reshape(2, -1)
        ax.errorbar(xs, means, yerr=np.nan_to_num(err), fmt=marker, color=color, capsize=4, ms=7,
                    label=f"{arm} R-LLM (ours, mean, 95% CI)")
        for xi, p in zip(xs, ours):
            if p["low"] is None:
                ax.annotate(f"n={p['n']}", (xi, p["mean"]), xytext=(0, 8), textcoords="offset points",
                            ha="center", fontsize=7, color=color)
        paper = [p for p in points if p["arm"] == arm and p["source"] == "paper"]
        what = "another protocol (test-split selection)" + (" and configuration" if other else "")
        ax.scatter([x[p["group"]] + offsets[(arm, "paper")] for p in paper], [p["mean"] for p in paper],
                   marker=marker, facecolors="none", edgecolors=color, linewidths=1.5, s=50,
                   label=f"{arm} R-LLM (paper: {what})")


def figure1(configs: list[Config], out_dir: Path) -> list[str]:
    """Figure 1 as figure1.png and figure1.pdf in ``out_dir``; [] when no ``main`` table has results."""
    points = figure_data(configs)
    if not points:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(p["group"] for p in points))
    fig, ax = plt.subplots(figsize=(max(6.5, 2.0 * len(groups) + 3), 4.5))
    _draw(ax, points, groups)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("test AUC (%)")
    ax.grid(axis="y", alpha=0.3)
    values = [v for p in points for v in (p["mean"], p["low"], p["high"]) if v is not None]
    pad = max(2.0, 0.1 * (max(values) - min(values)))
    ax.set_ylim(max(0.0, min(values) - pad), min(100.0, max(values) + pad))
    ax.set_title(TITLE, fontsize=11)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"figure1.{ext}"
        save_figure(fig, path, dpi=150, bbox_inches="tight")  # title and legend inside the saved image
        paths.append(str(path))
    plt.close(fig)
    return paths
