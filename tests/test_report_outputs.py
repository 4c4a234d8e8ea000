"""What a reader of the report sees: only tables with data, no ± for one seed, LaTeX fragments that \\input and
compile, an HTML page a browser renders, Figure 1, and a quick ablation (``ablate --epochs 1``) reported as a
configuration of its study."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from medboost_cli.report import make_report

from .conftest import TINY_SETS, write_medmnist
from .report_fixtures import fabricate


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    """The residual study on AdrenalMNIST3D with one seed per cell, reported in every format."""
    root = tmp_path_factory.mktemp("one-seed")
    rows = fabricate(root / "results", "residual", tasks=["adrenal3d"], seeds=1,
                     quality={"none": 1.0, "rllm": 2.0, "out": 1.0, "hybrid": 1.05})
    written = make_report(root / "results", root / "out", ["markdown", "latex", "html"], n_boot=200)
    return root, rows, written


def test_one_seed_shows_no_plus_minus(one_seed):
    _, rows, written = one_seed
    md = written["markdown"].read_text()
    table6 = md.split("## Table 6")[1].split("\n## ")[0]
    rllm = next(r for r in rows if r["booster"] == "rllm")
    assert f"| {100 * rllm['test_auc']:.2f} (n=1) [84.91] |" in table6
    assert "±" not in table6


def test_only_tables_with_data_and_one_ablate_line_per_empty_table(one_seed):
    md = one_seed[2]["markdown"].read_text()
    shown = re.findall(r"^## (.*)$", md, re.M)
    assert any(s.startswith("Table 6") for s in shown) and not any(s.startswith("Table 1") for s in shown)
    empty = md.split("## Tables without results")[1].split("\n## ")[0]
    lines = [l for l in empty.splitlines() if l.startswith("- ")]
    assert "- Table 1: " in empty and "fill with: `medboost ablate main2d`" in empty
    assert all(l.count("medboost ablate") == 1 for l in lines) and len(lines) < 20
    assert "medboost train" not in md  # no list of train commands without --all


def test_latex_fragments_are_booktabs_with_right_aligned_numbers_and_a_paper_column(one_seed):
    root, _, written = one_seed
    fragments = {p.stem: p.read_text() for p in (root / "out" / "tables").glob("*.tex")}
    table6 = fragments["table6-cpu"]
    assert r"\begin{tabular}{llrrrr}" in table6 and r"\toprule" in table6 and r"\bottomrule" in table6
    assert "Method & Dataset & ACC & paper & AUC & paper" in table6
    assert "[" not in table6.split(r"\midrule")[1]  # the paper's values have their own column, no brackets
    assert r"\documentclass" not in table6 and r"\resizebox" not in table6  # a fragment to \input
    rows = [l for l in table6.splitlines() if "AdrenalMNIST3D" in l]
    auc = [float(re.sub(r"\\textbf\{(.*)\}", r"\1", l.split(" & ")[4])) for l in rows]
    best = auc.index(max(auc))
    assert rows[best].split(" & ")[4].startswith(r"\textbf{") and sum(r"\textbf" in l.split(" & ")[4] for l in rows) == 1
    rllm = next(l for l in rows if l.startswith("ViViT (dim 192, depth 4, temporal depth 8) + R-LLM &"))
    assert rllm.split(" & ")[5] == r"84.91 \\"  # the paper's AUC, in its own column
    wrapper = written["latex"].read_text()
    assert set(re.findall(r"\\fittable\{tables/([^}]+)\}", wrapper)) == set(fragments)
    assert r"(-{}-preset cpu)" in wrapper  # an option keeps its two hyphens (not an en dash)
    assert r"\texttt{medboost ablate main2d}" in wrapper and "`" not in wrapper
    assert r"\caption{Table" not in wrapper  # LaTeX's own numbering would clash with the paper's "Table 6"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_wrapper_inputs_the_fragments_and_compiles(one_seed):
    root, _, written = one_seed
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", written["latex"].name],
                            cwd=root / "out", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "tables/table6-cpu.tex" in result.stdout and (root / "out" / "report.pdf").stat().st_size > 10_000


def test_html_renders_code_and_captions_figures(one_seed):
    html = one_seed[2]["html"].read_text()
    text = re.sub(r"<[^>]+>", "", html.split("<body>")[1])
    assert "`" not in text and "<code>medboost ablate main2d</code>" in html
    assert "<figure><img src='figure1.png'" in html and "<figcaption>Figure 1: " in html


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (apt-get install chromium)")
def test_html_screenshot_in_headless_chromium_is_not_blank(one_seed, tmp_path):
    from PIL import Image

    root, _, written = one_seed
    html = written["html"].read_text()
    assert html.count("<table>") >= 2 and "Table 6: importance of the residual structure" in html
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    written["html"].as_uri()], capture_output=True, timeout=120)
    assert shot.exists(), "Chromium wrote no screenshot"
    image = Image.open(shot).convert("L")
    import numpy as np

    pixels = np.asarray(image).ravel()
    assert len(np.unique(pixels)) > 10  # not a single colour
    dark = float((pixels < 200).mean())
    assert 0.01 < dark < 0.6, dark  # text and table rules on a white page


def test_pairs_csv_has_its_header_when_empty(tmp_path):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    make_report(tmp_path / "results", tmp_path / "out", ["markdown"])
    assert pd.read_csv(tmp_path / "out" / "pairs.csv").columns.tolist()[:4] == ["table", "row", "column", "metric"]
    assert pd.read_csv(tmp_path / "out" / "cells.csv").empty


def test_report_without_a_format_prints_markdown(tmp_path):
    from .test_cli import run

    fabricate(tmp_path / "results", "residual", tasks=["adrenal3d"], seeds=1)
    result = run("report", "--results-dir", tmp_path / "results", "--n-boot", "100")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (tmp_path / "reports" / "report.md").read_text() and "## Table 6" in result.stdout
    assert "--all" in run("report", "--help").stdout


def test_figure1_draws_points_for_one_seed_and_labels_the_papers_protocol(one_seed):
    from medboost_cli.report.figures import figure_data

    root, _, written = one_seed
    from medboost_cli.report.gather import gather

    points = figure_data(gather(root / "results", 1)[0])
    ours = [p for p in points if p["source"] == "ours"]
    assert ours and all(p["n"] == 1 and p["low"] is None for p in ours)  # one seed: a point, no interval
    assert any(p["source"] == "paper" for p in points)
    from PIL import Image

    image = Image.open(root / "out" / "figure1.png")
    assert image.size[0] > 600 and image.size[1] > 300


def test_a_quick_ablation_fills_its_table_and_its_paired_differences(tmp_path):
    """`ablate residual --epochs 1` (with --set overrides): a configuration of the residual study, shown as its
    Table 6 with the overrides in the caption, and its paired differences; nothing "outside the plans"."""
    from .test_cli import run

    write_medmnist(tmp_path / "d", "adrenal3d")
    sets = [x for s in TINY_SETS if not s.startswith("train.epochs") for x in ("--set", s)]
    done = run("ablate", "residual", "--tasks", "adrenal3d", "--seeds", "1", "--preset", "cpu", "--epochs", "1",
               *sets, "--data-dir", tmp_path / "d", "--results-dir", tmp_path / "r", "--quiet")
    assert done.returncode == 0, done.stderr
    md = make_report(tmp_path / "r", tmp_path / "out", ["markdown"], n_boot=100)["markdown"].read_text()
    title = next(l for l in md.splitlines() if l.startswith("## Table 6"))
    assert "--preset cpu" in title and "--set train.epochs=1" in title and "--set backbone.dim=32" in title
    table6 = md.split(title)[1].split("\n## ")[0]
    assert table6.count("(n=1)") == 8  # ACC and AUC of the four variants
    pairs = md.split("## Paired differences")[1].split("\n## ")[0]
    assert sum(l.startswith("| residual |") for l in pairs.splitlines()) == 3  # rllm, out, hybrid - none
    assert "outside the studies' plans" not in md
    assert len(pd.read_csv(tmp_path / "out" / "pairs.csv")) >= 6
