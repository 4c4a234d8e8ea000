"""`medboost report`: the paper's Tables 1-6 and our control and layer studies, regenerated from the results alone.

Every table comes from a study (recipes/studies/): its planned runs say which run ids fill which cell, so a
cell can only contain runs of exactly that configuration (the run id carries the configuration's hash). A
study is reported once per configuration that has results (the paper's recipes, or ``--preset cpu``); a
study without any results is shown with "—" cells and the commands that would fill them.

Cells read "mean ± std (n)" over seeds, in percent, with the paper's value in brackets. Each booster-vs-baseline
pair gets a paired-bootstrap interval (medboost_cli.stats); † marks an interval that includes zero. Every
number can be traced to its runs through cells.csv and pairs.csv, written beside the report.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import paper
from .errors import MedboostError
from .paper import TITLES
from .results import cell_id, load_results
from .stats import PairedDiff, describe, paired_bootstrap
from .studies import PlannedRun, Study, expand, load_study, study_names

PRESETS = (None, "cpu")
TABLE_STUDIES = {1: "main2d", 2: "main2d", 3: "main3d", 4: "main3d", 5: "capacity", 6: "residual"}


# ------------------------------------------------------------------------------------------------- data


@dataclass
class Cell:
    """The completed runs of one configuration (all seeds)."""

    runs: pd.DataFrame  # rows of the results

    @property
    def n(self) -> int:
        return len(self.runs)

    def values(self, metric: str) -> np.ndarray:
        return 100 * self.runs[f"test_{metric}"].to_numpy(dtype=float)

    def mean(self, metric: str) -> float | None:
        return float(self.values(metric).mean()) if self.n else None

    def std(self, metric: str) -> float:
        return float(self.values(metric).std(ddof=1)) if self.n > 1 else 0.0

    def text(self, metric: str, paper_value: float | None = None) -> str:
        ours = f"{self.mean(metric):.2f} ± {self.std(metric):.2f} ({self.n})" if self.n else "—"
        return ours + (f" [{paper_value:.2f}]" if paper_value is not None else "")

    @property
    def run_ids(self) -> list[str]:
        return sorted(self.runs["run_id"]) if self.n else []


@dataclass
class Config:
    """One study under one configuration (preset), with its planned runs and the completed rows per cell."""

    study: Study
    preset: str | None
    plan: list[PlannedRun]
    cells: dict[tuple[str, str, str], Cell]  # (task, backbone, variant) -> Cell

    @property
    def label(self) -> str:
        return f"--preset {self.preset}" if self.preset else "paper recipes"

    @property
    def has_results(self) -> bool:
        return any(c.n for c in self.cells.values())

    def cell(self, task: str, backbone: str, variant: str) -> Cell:
        return self.cells.get((task, backbone, variant), Cell(pd.DataFrame(columns=["run_id"])))

    def backbones(self) -> list[str]:
        return list(dict.fromkeys(r.backbone for r in self.plan))

    def fill_command(self, tasks: list[str]) -> str:
        parts = [f"medboost ablate {self.study.name}"] + [f"--tasks {t}" for t in tasks]
        return " ".join(parts + ([f"--preset {self.preset}"] if self.preset else []))


@dataclass
class Pair:
    config: Config
    task: str
    backbone: str
    variant: str
    reference: str
    acc: PairedDiff
    auc: PairedDiff
    run_ids: list[str]


@dataclass
class Table:
    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    traces: list[dict] = field(default_factory=list)  # one per number: table, row, column, metric, run ids


def gather(results_dir: Path, seeds: int = 3) -> tuple[list[Config], pd.DataFrame]:
    df = load_results(results_dir, status="completed")
    if not df.empty:
        df = df.assign(cell=df["run_id"].map(cell_id))
    configs = []
    for name in study_names():
        found = []
        for preset in PRESETS:
            study = load_study(name, preset)
            plan = expand(study, seeds=seeds, preset=preset)
            cells = {}
            for run in plan:
                if run.seed == 0:
                    rows = df[df["cell"] == run.cell] if not df.empty else df
                    cells[(run.task, run.backbone, run.variant)] = Cell(rows)
            found.append(Config(study, preset, plan, cells))
        with_results = [c for c in found if c.has_results]
        configs += with_results or found[:1]
    return configs, df


def paired_stats(config: Config, n_boot: int, seen: set | None = None) -> list[Pair]:
    """Paired differences for the study's comparisons; ``seen`` skips pairs of runs already done elsewhere
    (studies share runs: ViViT-M with and without R-LLM is in Tables 3, 5 and 6)."""
    seen = set() if seen is None else seen
    pairs = []
    keys = list(dict.fromkeys((t, b) for t, b, _ in config.cells))
    for task, backbone in keys:
        task_type = None
        for variant, reference in config.study.comparisons():
            a, b = config.cell(task, backbone, variant), config.cell(task, backbone, reference)
            if not (a.n and b.n):
                continue
            seeds = sorted(set(a.runs["seed"]) & set(b.runs["seed"]))
            if not seeds:
                continue
            ra = a.runs.set_index("seed").loc[seeds]
            rb = b.runs.set_index("seed").loc[seeds]
            key = (tuple(sorted(ra["run_id"])), tuple(sorted(rb["run_id"])))
            if key in seen:
                continue
            seen.add(key)
            labels = np.array(ra["test_labels"].iloc[0].tolist())
            base = [np.array(s.tolist()) for s in rb["test_scores"]]
            boost = [np.array(s.tolist()) for s in ra["test_scores"]]
            task_type = task_type or _task_type(task)
            acc = paired_bootstrap(labels, base, boost, task_type, "acc", n_boot=n_boot)
            auc = paired_bootstrap(labels, base, boost, task_type, "auc", n_boot=n_boot)
            pairs.append(Pair(config, task, backbone, variant, reference, acc, auc,
                              sorted(ra["run_id"]) + sorted(rb["run_id"])))
    return pairs


def _task_type(task: str) -> str:
    from .tasks import resolve_task

    return resolve_task(task).task_type


# ----------------------------------------------------------------------------------------------- tables


def _trace(table: Table, row: str, column: str, metric: str, cell: Cell) -> None:
    if cell.n:
        table.traces.append({"table": table.key, "row": row, "column": column, "metric": metric,
                             "mean": round(cell.mean(metric), 4), "std": round(cell.std(metric), 4), "n": cell.n,
                             "run_ids": ";".join(cell.run_ids)})


def _missing_note(config: Config, cells: list[tuple[str, Cell]]) -> list[str]:
    tasks = [t for t, c in cells if not c.n]
    if not tasks:
        return []
    tasks = list(dict.fromkeys(tasks))
    every = set(tasks) == {r.task for r in config.plan}
    return [f"— = not run yet; fill with: `{config.fill_command([] if every else tasks)}`"]


def table_main(config: Config, number: int) -> Table:
    """Tables 1 (2D) and 3 (3D): per task, ACC and AUC without and with R-LLM."""
    backbones = config.backbones()
    tasks = list(dict.fromkeys(r.task for r in config.plan))
    names = "/".join(TITLES.get(b, b) for b in backbones)
    t = Table(f"table{number}", f"Table {number}: {names} without (✗) and with (✓) R-LLM, test % [paper] "
                                f"({config.label})",
              (["Backbone"] if number == 3 else []) + ["Metric"] + [f"{TITLES[k]} {m}" for k in tasks for m in "✗✓"],
              [])
    seen = []
    for backbone in backbones:
        for metric in ("acc", "auc"):
            row = ([TITLES.get(backbone, backbone)] if number == 3 else []) + [metric.upper()]
            for task in tasks:
                for variant in ("none", "rllm"):
                    cell = config.cell(task, backbone, variant)
                    ref = paper.paper_value(1 if number == 1 else 3, task, variant, metric,
                                            backbone if number == 3 else None)
                    row.append(cell.text(metric, ref))
                    _trace(t, f"{backbone} {metric}", f"{task} {variant}", metric, cell)
                    seen.append((task, cell))
            t.rows.append(row)
    t.notes += _missing_note(config, seen)
    if config.preset:
        t.notes.append(f"Our runs use {config.label} ({names}); the paper's values in brackets come from its own, "
                       f"larger configuration and are for orientation only.")
    return t


def table_prior(config: Config, number: int) -> Table:
    """Tables 2 (2D) and 4 (3D): ACC beside the prior methods the paper lists."""
    tasks = paper.TASKS_2D if number == 2 else paper.TASKS_3D
    prior = paper.TABLE2_PRIOR if number == 2 else paper.TABLE4_PRIOR
    t = Table(f"table{number}", f"Table {number}: test ACC % beside prior methods ({config.label})",
              ["Method"] + [TITLES[k] for k in tasks], [])
    for method, values in prior.items():
        t.rows.append([f"{method} (paper)"] + [f"{v:.1f}" for v in values])
    if number == 2:
        name, values = paper.TABLE2_PAPER_OURS
        t.rows.append([f"{name} (paper)"] + [f"{v:.1f}" if v is not None else "—" for v in values])
    else:
        for backbone, values in paper.TABLE4_PAPER_OURS.items():
            t.rows.append([f"{TITLES[backbone]}+R-LLM (paper)"] + [f"{v:.1f}" for v in values])
    seen = []
    for backbone in config.backbones():
        for variant, suffix in (("none", ""), ("rllm", "+R-LLM")):
            row = [f"{TITLES.get(backbone, backbone)}{suffix} (ours)"]
            for task in tasks:
                cell = config.cell(task, backbone, variant)
                row.append(cell.text("acc"))
                _trace(t, f"{backbone}{suffix}", task, "acc", cell)
                seen.append((task, cell))
            t.rows.append(row)
    t.notes.append(f"Prior-method rows: {paper.PRIOR_SOURCE}.")
    t.notes += _missing_note(config, seen)
    return t


VARIANT_NAMES = {"none": "", "mlp": " + MLP", "rllm": " + R-LLM", "rllm-ft": " + R-LLM (FT)", "out": " + Out R-LLM",
                 "hybrid": " + Hybrid R-LLM", "rllm-random": " + R-LLM, random F_L",
                 "rllm-shuffled": " + R-LLM, shuffled F_L"}


def table_ablation(config: Config, number: int | None, key: str, title: str) -> Table:
    """Tables 5 and 6 and the control study: one row per task x variant."""
    with_params = number == 5
    header = ["Method", "Dataset"] + (["Params (M) [paper]"] if with_params else []) + ["ACC [paper]", "AUC [paper]"]
    t = Table(key, f"{title} ({config.label})", header, [])
    seen = []
    for task in dict.fromkeys(r.task for r in config.plan):
        for backbone in config.backbones():
            for variant in config.study.all_variants():
                cell = config.cell(task, backbone, variant)
                label = TITLES.get(backbone, backbone) + VARIANT_NAMES.get(variant, f" {variant}")
                row = [label, TITLES.get(task, task)]
                if with_params:
                    ref = paper.TABLE5.get(task, {}).get(variant, (None,))[0]
                    params = f"{cell.runs['params_total'].iloc[0] / 1e6:.1f}" if cell.n else "—"
                    row.append(params + (f" [{ref:.1f}]" if ref else ""))
                for metric in ("acc", "auc"):
                    row.append(cell.text(metric, paper.paper_value(number, task, variant, metric) if number else None))
                    _trace(t, label, task, metric, cell)
                seen.append((task, cell))
                t.rows.append(row)
    t.notes += _missing_note(config, seen)
    return t


def table_layers(config: Config) -> Table:
    layers = [v for v in config.study.all_variants() if v.startswith("rllm-L")]
    tasks = list(dict.fromkeys(r.task for r in config.plan))
    t = Table("layers", f"{config.study.title}: test AUC % by layer index ({config.label})",
              ["F_L"] + [TITLES.get(k, k) for k in tasks], [])
    seen = []
    for variant in ["none"] + layers:
        row = ["none (baseline)" if variant == "none" else f"layer {variant[6:]}"]
        for task in tasks:
            backbone = next(r.backbone for r in config.plan if r.task == task)
            cell = config.cell(task, backbone, variant)
            row.append(cell.text("auc"))
            _trace(t, variant, task, "auc", cell)
            seen.append((task, cell))
        t.rows.append(row)
    t.notes += _missing_note(config, seen)
    return t


def _diff(d: PairedDiff) -> str:
    mark = " †" if d.includes_zero else ""
    return f"{100 * d.mean_diff:+.2f} ({100 * d.ci_low:+.2f} to {100 * d.ci_high:+.2f}){mark}"


def table_pairs(pairs: list[Pair]) -> Table:
    t = Table("pairs", "Paired differences (variant minus reference), percentage points, 95% bootstrap CI",
              ["Study", "Config", "Dataset", "Backbone", "Comparison", "n", "ΔACC", "ΔAUC", "AUC verdict"], [])
    for p in pairs:
        t.rows.append([p.config.study.name, p.config.label, TITLES.get(p.task, p.task), TITLES.get(p.backbone, p.backbone),
                       f"{p.variant} − {p.reference}", str(p.auc.n_seeds), _diff(p.acc), _diff(p.auc), p.auc.verdict])
        for metric, d in (("acc", p.acc), ("auc", p.auc)):
            t.traces.append({"table": "pairs", "row": f"{p.config.study.name} {p.task} {p.backbone}",
                             "column": f"{p.variant}-{p.reference}", "metric": metric,
                             "mean": round(100 * d.mean_diff, 4), "std": None, "n": d.n_seeds,
                             "run_ids": ";".join(p.run_ids)})
    n_boot = pairs[0].auc.n_boot if pairs else 2000
    t.notes.append("† = the interval includes zero: no clear difference. Method: " + STATS_METHOD.format(n_boot=n_boot))
    return t


STATS_METHOD = ("for each pair of runs with the same seed, the difference in test ACC/AUC; the point estimate is the "
                "mean over seeds; the interval resamples seeds and test samples (the same samples for both arms) "
                "{n_boot} times and takes the 2.5th and 97.5th percentiles (medboost_cli.stats).")


def summary(pairs: list[Pair]) -> list[str]:
    """One sentence per task (and backbone/configuration) on whether R-LLM helped its baseline."""
    lines, seen = [], set()
    for p in pairs:
        key = (p.task, p.backbone, p.config.label)
        if (p.variant, p.reference) != ("rllm", "none") or key in seen:
            continue
        seen.add(key)
        label = f"{TITLES.get(p.task, p.task)} ({TITLES.get(p.backbone, p.backbone)}, {p.config.label})"
        lines.append(describe(label, p.acc, p.auc))
    return lines


def build_tables(configs: list[Config]) -> list[Table]:
    tables = []
    for config in configs:
        name = config.study.name
        if name == "main2d":
            tables += [table_main(config, 1), table_prior(config, 2)]
        elif name == "main3d":
            tables += [table_main(config, 3), table_prior(config, 4)]
        elif name == "capacity":
            tables.append(table_ablation(config, 5, "table5", "Table 5: capacity and fine-tuning"))
        elif name == "residual":
            tables.append(table_ablation(config, 6, "table6", "Table 6: importance of the residual structure"))
        elif name == "control":
            tables.append(table_ablation(config, None, "control", "Control: " + config.study.title))
        elif name == "layers":
            tables.append(table_layers(config))
    order = ["table1", "table2", "table3", "table4", "table5", "table6", "control", "layers"]
    return sorted(tables, key=lambda t: order.index(t.key) if t.key in order else len(order))


# -------------------------------------------------------------------------------------------- rendering


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(tables: list[Table], sentences: list[str], meta: dict) -> str:
    out = [f"# medboost report", "", f"{meta['n_runs']} completed runs from `{meta['results']}`, {meta['date']}. "
           "Protocol: epoch selected on validation AUC, test scored once; cells are test mean ± std over seeds "
           "(n), in percent, with the paper's value in brackets. Every number traces to its runs in `cells.csv` "
           "and `pairs.csv`.", "", "## Summary", ""]
    out += [f"- {s}" for s in sentences] or ["- No booster-vs-baseline pair has results yet."]
    for t in tables:
        out += ["", f"## {t.title}", "", "| " + " | ".join(map(_md_escape, t.header)) + " |",
                "|" + "|".join("---" for _ in t.header) + "|"]
        out += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in t.rows]
        out += [""] + [f"{n}  " for n in t.notes] if t.notes else []
    if meta.get("missing"):
        out += ["", "## Missing runs", "", "Commands that would fill every empty cell above:", "", "```bash"]
        out += meta["missing"] + ["```"]
    if meta.get("figures"):
        out += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in meta["figures"] if f.endswith(".png")]
    return "\n".join(out) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "✗": "w/o", "✓": "w/", "−": "$-$", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text.encode("ascii", "replace").decode()


def render_latex(tables: list[Table], sentences: list[str], meta: dict) -> str:
    out = [r"\documentclass[10pt]{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}",
           r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\begin{document}",
           r"\section*{medboost report}",
           latex_escape(f"{meta['n_runs']} completed runs from {meta['results']}, {meta['date']}. Epoch selected on "
                        "validation AUC, test scored once; cells: test mean ± std over seeds (n), percent, paper value in "
                        "brackets; run ids in cells.csv and pairs.csv."),
           r"\subsection*{Summary}", r"\begin{itemize}"]
    out += [r"\item " + latex_escape(s) for s in sentences] or [r"\item No booster-vs-baseline pair has results yet."]
    out.append(r"\end{itemize}")
    for t in tables:
        out += [r"\begin{table}[h]\centering\small", r"\caption{" + latex_escape(t.title) + "}",
                r"\resizebox{\textwidth}{!}{%", r"\begin{tabular}{" + "l" * len(t.header) + "}", r"\toprule",
                " & ".join(latex_escape(h) for h in t.header) + r" \\", r"\midrule"]
        out += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in t.rows]
        out += [r"\bottomrule", r"\end{tabular}}"]
        out += [r"\par\footnotesize " + latex_escape(n) for n in t.notes]
        out += [r"\end{table}", r"\clearpage" if len(t.rows) > 14 else ""]
    for f in meta.get("figures", []):
        if f.endswith(".pdf"):
            out += [r"\begin{figure}[h]\centering", r"\includegraphics[width=0.9\textwidth]{" + Path(f).name + "}",
                    r"\caption{Figure 1: test AUC per dataset without and with R-LLM (ours: mean $\pm$ std; "
                    r"paper: markers).}", r"\end{figure}"]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def render_html(tables: list[Table], sentences: list[str], meta: dict) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>medboost report</title><style>",
           "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0}",
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} td:first-child{text-align:left}",
           ".note{font-size:90%;color:#444}</style></head><body>", "<h1>medboost report</h1>",
           f"<p>{e(str(meta['n_runs']))} completed runs from <code>{e(str(meta['results']))}</code>, {e(meta['date'])}. "
           "Epoch selected on validation AUC, test scored once; cells: test mean ± std over seeds (n), percent, "
           "paper value in brackets; run ids in <code>cells.csv</code> and <code>pairs.csv</code>.</p>",
           "<h2>Summary</h2><ul>"]
    out += [f"<li>{e(s)}</li>" for s in sentences] or ["<li>No booster-vs-baseline pair has results yet.</li>"]
    out.append("</ul>")
    for t in tables:
        out += [f"<h2>{e(t.title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in t.rows]
        out += ["</table>"] + [f"<p class='note'>{e(n)}</p>" for n in t.notes]
    if meta.get("missing"):
        out += ["<h2>Missing runs</h2><details><summary>commands</summary><pre>",
                e("\n".join(meta["missing"])), "</pre></details>"]
    out += [f"<img src='{e(Path(f).name)}' style='max-width:100%'>" for f in meta.get("figures", []) if f.endswith(".png")]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- figures


def figure1(configs: list[Config], out_dir: Path) -> list[str]:
    """Paper Figure 1: test AUC per dataset without and with R-LLM, our error bars beside the paper's values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = []  # (label, ours none, ours rllm, paper none, paper rllm)
    for config in configs:
        if config.study.name not in ("main2d", "main3d"):
            continue
        for (task, backbone, variant), cell in config.cells.items():
            if variant != "none":
                continue
            boosted = config.cell(task, backbone, "rllm")
            if not (cell.n or boosted.n):
                continue
            table = 1 if config.study.name == "main2d" else 3
            ref = [paper.paper_value(table, task, v, "auc", backbone if table == 3 else None) for v in ("none", "rllm")]
            label = f"{TITLES.get(task, task)}\n{TITLES.get(backbone, backbone)}" + (f"\n{config.label}" if config.preset else "")
            groups.append((label, cell, boosted, *ref))
    if not groups:
        return []
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
        fig.savefig(path, dpi=150)
        paths.append(str(path))
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------- entry


def make_report(results_dir: Path, out_dir: Path, formats: list[str], seeds: int = 3, n_boot: int = 2000,
                log=print) -> dict[str, Path]:
    """Write the requested formats (markdown, latex, html) plus cells.csv, pairs.csv and Figure 1 into out_dir."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    configs, df = gather(results_dir, seeds)
    seen: set = set()
    pairs = [p for c in configs if c.has_results for p in paired_stats(c, n_boot, seen)]
    tables = build_tables(configs)
    if pairs:
        tables.append(table_pairs(pairs))
    out_dir.mkdir(parents=True, exist_ok=True)
    done = set(df["run_id"]) if not df.empty else set()
    missing = [run.command() for c in configs for run in c.plan if run.run_id not in done]
    meta = {"n_runs": len(df), "results": str(results_dir), "missing": list(dict.fromkeys(missing)),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "figures": figure1(configs, out_dir)}
    sentences = summary(pairs)
    written = {}
    pd.DataFrame([tr for t in tables for tr in t.traces if t.key != "pairs"]).to_csv(out_dir / "cells.csv", index=False)
    pd.DataFrame([tr for t in tables for tr in t.traces if t.key == "pairs"]).to_csv(out_dir / "pairs.csv", index=False)
    renderers = {"markdown": ("report.md", render_markdown), "latex": ("report.tex", render_latex),
                 "html": ("report.html", render_html)}
    for fmt in formats:
        if fmt not in renderers:
            raise MedboostError(f"unknown report format '{fmt}'; use markdown, latex or html")
        name, render = renderers[fmt]
        (out_dir / name).write_text(render(tables, sentences, meta))
        written[fmt] = out_dir / name
    return written
