"""`medboost report` from a fabricated results folder: tables, statistics, traces, figures, LaTeX, Grad-CAM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from medboost_cli.recipes import recipes_dir
from medboost_cli.report import latex_escape, make_report
from medboost_cli.report.render import selection_text
from medboost_cli.results import write_row

from .conftest import TINY_SETS, write_medmnist
from .report_fixtures import fabricate


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rows = fabricate(root / "results", "residual", tasks=["adrenal3d"], seeds=2,
                     quality={"none": 1.0, "rllm": 2.0, "out": 1.0, "hybrid": 1.05})
    written = make_report(root / "results", root / "out", ["markdown", "latex", "html"], n_boot=500)
    return root, rows, written


@pytest.fixture(scope="module")
def report_all(report):
    """The same results reported with ``all_tables``: every table, also those without data."""
    root, rows, _ = report
    written = make_report(root / "results", root / "out-all", ["markdown", "html"], n_boot=100, all_tables=True)
    return root, rows, written


CPU_VIVIT = "ViViT (dim 192, depth 4, temporal depth 8)"  # --preset cpu's vivit-m: its own size, not the paper's ViViT-M


def test_table6_has_our_numbers_beside_the_papers(report):
    root, rows, written = report
    md = written["markdown"].read_text()
    table6 = md.split("## Table 6")[1].split("## ")[0]
    rllm = [r for r in rows if r["booster"] == "rllm"]
    mean_auc = 100 * sum(r["test_auc"] for r in rllm) / len(rllm)
    assert f"| {CPU_VIVIT} + R-LLM | AdrenalMNIST3D | " in table6 and "ViViT-M" not in table6
    assert f"{mean_auc:.2f} ± " in table6 and "(2) [84.91]" in table6  # ours (n=2) beside the paper's 84.91
    assert f"| {CPU_VIVIT} + Out R-LLM | FractureMNIST3D | — [55.83] | — [65.60] |" in table6
    assert "fill with: `medboost ablate residual --tasks fracture3d --preset cpu`" in table6


def test_other_tables_show_dashes_and_fill_commands(report_all):
    md = report_all[2]["markdown"].read_text()
    table1 = md.split("## Table 1")[1].split("## ")[0]
    assert "— [87.17]" in table1 and "fill with: `medboost ablate main2d`" in table1
    assert "## Table 2" in md and "MedViT-S (paper) | 89.7" in md and "as reported in Lai et al. 2024" in md
    assert "## Control" in md and "## Which layer" in md
    assert "medboost train fracture3d --backbone vivit-m --booster out --seed 0 --preset cpu" in md


def test_paired_intervals_marked_and_summarised(report):
    md = report[2]["markdown"].read_text()
    pairs = md.split("## Paired differences")[1].split("## ")[0]
    lines = [l for l in pairs.splitlines() if l.startswith("| residual") or l.startswith("| capacity") or l.startswith("| main3d")]
    by_variant = {l.split(" | ")[4]: l for l in lines}
    assert "better" in by_variant["rllm − none"] and "†" not in by_variant["rllm − none"].split(" | ")[7]
    assert "†" in by_variant["out − none"] and "no clear difference" in by_variant["out − none"]
    assert "resamples seeds and test samples (the same samples for both arms) 500 times" in pairs  # n_boot=500
    assert len(lines) == 3  # rllm, out, hybrid vs none, each once although three studies share the runs
    summary = md.split("## Summary")[1].split("## ")[0]
    line = f"- AdrenalMNIST3D ({CPU_VIVIT}, --preset cpu): the booster changed AUC by "  # 2 seeds: no direction
    assert summary.count(line) == 1 and "2 seeds, too few seeds to call" in summary


def test_every_number_traces_to_its_runs(report):
    root, rows, _ = report
    cells = pd.read_csv(root / "out" / "cells.csv")
    row = cells[(cells.table == "table6") & (cells.column == "adrenal3d") & (cells.metric == "auc")
                & (cells.row == f"{CPU_VIVIT} + Out R-LLM")].iloc[0]
    ids = row.run_ids.split(";")
    fabricated = {r["run_id"]: r for r in rows}
    assert len(ids) == 2 and all(i in fabricated for i in ids)
    assert row["mean"] == pytest.approx(100 * sum(fabricated[i]["test_auc"] for i in ids) / 2, abs=1e-3)
    pairs = pd.read_csv(root / "out" / "pairs.csv")
    assert len(pairs) == 6 and all(len(p.split(";")) == 4 for p in pairs.run_ids)


def test_figure_and_html(report, report_all):
    root, _, written = report
    assert (root / "out" / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "out" / "figure1.pdf").exists()
    html = report_all[2]["html"].read_text()
    assert html.count("<table>") >= 8 and "AdrenalMNIST3D" in html


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles_with_pdflatex(report):
    root, _, written = report
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", written["latex"].name],
                            cwd=root / "out", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert (root / "out" / "report.pdf").exists()


def test_one_introduction_names_the_runs_selection_metric(report):
    written = report[2]
    assert "Protocol: epoch selected on validation AUC, test scored once" in written["markdown"].read_text()
    assert "Protocol: epoch selected on validation AUC, test scored once" in written["latex"].read_text()
    assert "Protocol: epoch selected on validation AUC, test scored once" in written["html"].read_text()
    # each format says how it shows the paper's value: brackets in Markdown, a column of its own in LaTeX
    assert "with the paper's value in brackets" in written["markdown"].read_text()
    latex = written["latex"].read_text()
    assert "in the column beside ours" in latex and "in brackets" not in latex


def test_introduction_follows_select_metric(tmp_path):
    rows = fabricate(tmp_path / "results", "residual", tasks=["adrenal3d"], seeds=1)
    for row in rows:
        write_row(tmp_path / "results", {**row, "select_metric": "loss"})
    md = make_report(tmp_path / "results", tmp_path / "out", ["markdown"], n_boot=100)["markdown"].read_text()
    assert "epoch selected on validation loss, test scored once" in md and "validation AUC" not in md
    assert selection_text({"auc": 5, "loss": 1}) == "validation AUC (5 runs) or loss (1 run)"
    assert selection_text({"acc": 3, None: 2}) == "validation ACC (3 runs) or an unrecorded metric (2 runs)"
    assert selection_text({}) == selection_text({None: 4}) == "the validation split (each run's train.select_metric)"


NEW_STUDY = """
title: "Diagnosis tokens (a study the code has never seen)"
tasks: [breast]
baseline: base
variants:
  base: {booster: none, label: "no LLM"}
  tokens: {booster: rllm, label: "+engine+emitter"}
  simple: {booster: mlp, label: simplified}
tables:
  - kind: ablation
    key: tokens-ablation
    caption: "Ablation of the {backbones} diagnosis tokens"
    metrics: [auc, acc]
    paper:
      breast: {tokens: {auc: 78.98, acc: 75.87}, base: {auc: 70.12}}
  - kind: layers
    key: tokens-by-variant
    caption: "Tokens, ACC by variant"
    variants: [simple, tokens]
    metrics: [acc]
"""


def test_a_new_study_yaml_is_reported_without_code_changes(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    shutil.copytree(recipes_dir(), recipes, ignore=shutil.ignore_patterns("studies"))
    (recipes / "studies").mkdir()
    (recipes / "studies" / "tokens.yaml").write_text(NEW_STUDY)
    monkeypatch.setenv("MEDBOOST_RECIPES", str(recipes))
    rows = fabricate(tmp_path / "results", "tokens", seeds=2, quality={"base": 1.0, "tokens": 2.0, "simple": 1.0})
    written = make_report(tmp_path / "results", tmp_path / "out", ["markdown"], n_boot=100)
    md = written["markdown"].read_text()
    table = md.split("## Ablation of the ViT-mini diagnosis tokens (--preset cpu)")[1].split("## ")[0]
    tokens = [r for r in rows if r["booster"] == "rllm"]
    mean_auc = 100 * sum(r["test_auc"] for r in tokens) / len(tokens)
    assert "| Method | Dataset | AUC [paper] | ACC [paper] |" in table
    assert f"| ViT-mini + +engine+emitter | BreastMNIST | {mean_auc:.2f} ± " in table and "(2) [78.98] |" in table
    assert "| ViT-mini + no LLM | BreastMNIST |" in table and "(2) [70.12] |" in table
    assert "| ViT-mini + simplified | BreastMNIST |" in table
    by_variant = md.split("## Tokens, ACC by variant (--preset cpu)")[1].split("## ")[0]
    assert "| F_L | BreastMNIST |" in by_variant and "| simplified | " in by_variant and "no LLM" not in by_variant
    assert "| tokens | --preset cpu | BreastMNIST | ViT-mini | tokens − base | 2 |" in md  # paired against its baseline
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert set(cells.table) == {"tokens-ablation", "tokens-by-variant"}


def test_latex_escaping():
    assert latex_escape("84.1 ± 1.2 [87.2] † 5% a_b — ✗ `cmd --x`") == (
        r"84.1 $\pm$ 1.2 [87.2] $^\dagger$ 5\% a\_b --- w/o cmd --x")


def test_empty_results_still_report(tmp_path):
    (tmp_path / "none" / "runs").mkdir(parents=True)
    written = make_report(tmp_path / "none", tmp_path / "out", ["markdown"])
    md = written["markdown"].read_text()
    assert "0 completed runs" in md and "No booster-vs-baseline pair has results yet" in md
    assert "fill with: `medboost ablate residual`" in md


def test_a_folder_that_is_not_results_or_an_out_that_is_a_file_is_a_clear_error(tmp_path):
    from medboost_cli.errors import MedboostError

    (tmp_path / "file").write_text("x")
    for missing in (tmp_path / "missing", tmp_path / "file"):
        with pytest.raises(MedboostError, match="not a results folder"):
            make_report(missing, tmp_path / "out", ["markdown"])
    (tmp_path / "results" / "runs").mkdir(parents=True)
    with pytest.raises(MedboostError, match="--out .*is a file"):
        make_report(tmp_path / "results", tmp_path / "file", ["markdown"])
    assert not (tmp_path / "out").exists()  # nothing written


def test_gradcam_side_by_side(tmp_path):
    from medboost_cli.engine import train
    from medboost_cli.gradcam import gradcam_figure, partner_run_id
    from medboost_cli.recipes import load_recipe

    write_medmnist(tmp_path / "d", "breast")
    rows = [train(load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", m)],
                              sets=TINY_SETS + ["train.epochs=1"]), tmp_path / "d", tmp_path / "r", log=lambda *a: None)
            for m in ("none", "rllm")]
    assert partner_run_id(rows[1]) == rows[0]["run_id"] and partner_run_id(rows[0]) == rows[1]["run_id"]
    paths = gradcam_figure(rows[1]["run_id"], tmp_path / "r", tmp_path / "d", 2, tmp_path / "out")
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].suffix == ".pdf"


def test_a_run_outside_every_plan_is_shown_with_what_differs(tmp_path):
    """A completed run made with --set overrides fits no study's cell: it gets its own row, labelled with the keys
    that differ from its task's recipe, and its run ids are traced in cells.csv."""
    from medboost_cli.recipes import load_recipe
    from medboost_cli.results import new_row

    fabricate(tmp_path / "results", "residual", tasks=["adrenal3d"], seeds=1)
    flags = [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 0)]
    # Two seeds with --epochs 2 --lr 0.001, and a control-study variant (a random F_L) with --epochs 2.
    for seed, auc, sets in ((0, 0.6, ["train.lr=0.001"]), (1, 0.7, ["train.lr=0.001"]),
                            (0, 0.8, ["booster.llm_init=random"])):
        recipe = load_recipe("breast", preset="cpu", flags=flags + [("--seed", "seed", seed)],
                             sets=["train.epochs=2"] + sets)
        write_row(tmp_path / "results", new_row(
            run_id=recipe.run_id(), status="completed", task="breast", backbone=recipe.backbone.name,
            booster="rllm", seed=seed, test_acc=0.5, test_auc=auc, config_json=recipe.model_dump_json()))
    written = make_report(tmp_path / "results", tmp_path / "out", ["markdown"], n_boot=200)
    md = written["markdown"].read_text()
    outside = md.split("## Completed runs outside the studies' plans")[1]
    assert "| --preset cpu, train.epochs=2, train.lr=0.001 | BreastMNIST | ViT-mini | rllm | 50.00 ± 0.00 (2) | " \
           "65.00 ± 7.07 (2) |" in outside
    # labelled from the nearest planned cell (the control study's), not with every key its variant sets
    assert "| control rllm-random, --preset cpu, train.epochs=2 | BreastMNIST | ViT-mini | rllm | " in outside
    assert "- 3 completed runs (2 configurations) fit no study's cell" in md.split("## Summary")[1].split("## ")[0]
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    traced = cells[cells["table"] == "outside"]
    assert len(traced) == 4 and sum(recipe.run_id().rsplit("-s", 1)[0] in ids for ids in traced["run_ids"]) == 2


def test_report_goes_beside_the_results_prints_its_markdown_and_names_the_given_folders(tmp_path, monkeypatch):
    """Without --out: results -> reports, NAME -> NAME-reports; --markdown prints report.md as
    written; the fill-in commands carry --results-dir/--data-dir when they were given on the command line."""
    from medboost_cli.report import default_out_dir

    from .test_cli import run

    assert default_out_dir(Path("results")) == Path("reports")
    assert default_out_dir(tmp_path / "results-cpu") == tmp_path / "reports-cpu"
    assert default_out_dir(tmp_path / "exp1") == tmp_path / "exp1-reports"
    (tmp_path / "exp1" / "runs").mkdir(parents=True)  # no runs: every cell has a fill-in command
    given = run("report", "--results-dir", tmp_path / "exp1", "--data-dir", tmp_path / "data", "--markdown",
                "--n-boot", "100", "--all")
    assert given.returncode == 0, given.stderr
    md = (tmp_path / "exp1-reports" / "report.md").read_text()
    assert given.stdout == md
    options = f"--results-dir {tmp_path / 'exp1'} --data-dir {tmp_path / 'data'}"
    assert f"fill with: `medboost ablate main2d {options}`" in md
    assert f"medboost train fracture3d --backbone vivit-m --booster none --seed 0 {options}\n" in md
    monkeypatch.setenv("MEDBOOST_RESULTS", str(tmp_path / "exp1"))  # from the environment: not repeated
    monkeypatch.chdir(tmp_path)
    assert run("report", "--n-boot", "100").returncode == 0
    assert "--results-dir" not in (tmp_path / "exp1-reports" / "report.md").read_text()


def test_a_study_over_2d_and_3d_tasks_shows_each_task_with_its_own_backbones(tmp_path):
    fabricate(tmp_path / "results", "control", seeds=1)
    md = make_report(tmp_path / "results", tmp_path / "out", ["markdown"], n_boot=200)["markdown"].read_text()
    control = md.split("## Control")[1].split("\n## ")[0]
    assert "| ViT-mini | BreastMNIST |" in control and "| ViT-3D (dim 192, depth 4) | AdrenalMNIST3D |" in control
    assert "| ViT-3D | BreastMNIST |" not in control and "| ViT-mini | AdrenalMNIST3D |" not in control
    assert "| Method | Dataset | ACC | AUC |" in control  # no "[paper]" header: the paper has no control study


def test_the_metric_panel_table_shows_means_over_the_seeds_that_have_a_panel(tmp_path):
    import json

    import numpy as np

    from medboost_cli.panel import panel, panel_columns

    rows = fabricate(tmp_path / "results", "residual", tasks=["adrenal3d"], seeds=2)
    with_panel = [r for r in rows if r["seed"] == 0 or r["booster"] != "rllm"]  # R-LLM's seed 1: a row from before
    for r in with_panel:
        write_row(tmp_path / "results", r | panel_columns(panel(np.array(r["test_labels"]),
                                                                np.array(r["test_scores"]), "binary-class")))
    written = make_report(tmp_path / "results", tmp_path / "out", ["markdown", "latex", "html"], n_boot=50)
    md = written["markdown"].read_text()
    table = md.split("## Metric panel: residual")[1].split("\n## ")[0]
    rllm = [r for r in with_panel if r["booster"] == "rllm"]
    mcc = 100 * json.loads(panel_columns(panel(np.array(rllm[0]["test_labels"]), np.array(rllm[0]["test_scores"]),
                                                "binary-class"))["test_panel_json"])["mcc"]
    line = next(row for row in table.splitlines() if f"{CPU_VIVIT} + R-LLM |" in row)
    assert f"{mcc:.2f} (n=1)" in line and "| — |" in line  # one seed with a panel; no QWK for a binary task
    assert "(2)" in next(row for row in table.splitlines() if row.startswith(f"| {CPU_VIVIT} | "))
    assert "Youden" in table and (tmp_path / "out" / "tables" / "panel-residual-cpu.tex").exists()
    assert "Metric panel" in written["html"].read_text()


def test_a_study_run_on_a_task_outside_its_list_gets_that_task_in_its_table_and_verdict(tmp_path):
    """``ablate control --tasks pneumonia``: control lists breast and adrenal3d, yet its runs on PneumoniaMNIST are
    its cells there (table, verdict lines, Holm over its tasks), not runs outside every plan. Cells it shares with
    main2d's own plan (the baseline and R-LLM) do not draw the layer study onto that task; a pool's per-run
    ``train.threads`` is where a run ran, never a difference a label names."""
    from medboost_cli.recipes import load_recipe
    from medboost_cli.results import new_row

    fabricate(tmp_path / "results", "control", tasks=["pneumonia"], seeds=3, quality={"rllm": 2.0})
    recipe = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "rllm")],
                         sets=["train.epochs=2", "train.threads=1"])
    write_row(tmp_path / "results", new_row(
        run_id=recipe.run_id(), status="completed", task="breast", backbone=recipe.backbone.name,
        booster="rllm", seed=0, test_acc=0.5, test_auc=0.6, config_json=recipe.model_dump_json()))
    md = make_report(tmp_path / "results", tmp_path / "out", ["markdown"], n_boot=200)["markdown"].read_text()
    control = md.split("## Control")[1].split("\n## ")[0]
    assert "| ViT-mini + R-LLM, shuffled F_L | PneumoniaMNIST | " in control
    assert "(3) |" in control.split("| ViT-mini + MLP | PneumoniaMNIST |")[1].splitlines()[0]
    verdicts = md.split("## Verdict per task")[1].split("\n## ")[0]
    for reference in ("the baseline", "the capacity control", "a random F_L", "a shuffled F_L"):
        assert f"- PneumoniaMNIST (ViT-mini; control, --preset cpu), R-LLM vs {reference}" in verdicts
    outside = md.split("## Completed runs outside the studies' plans")[1].split("\n## ")[0]
    assert "PneumoniaMNIST" not in outside  # only the breast run with --epochs 2 is outside
    assert "| --preset cpu, train.epochs=2 | BreastMNIST |" in outside and "threads" not in outside
    from medboost_cli.report.gather import gather

    tasks = {(c.study.name, c.preset): c.tasks() for c in gather(tmp_path / "results", seeds=3)[0]}
    assert tasks[("control", "cpu")] == ["breast", "adrenal3d", "pneumonia"]
    assert all("pneumonia" not in t for (name, _), t in tasks.items() if name == "layers")  # main2d's baseline

    other = tmp_path / "main2d"
    fabricate(other, "main2d", tasks=["pneumonia"], seeds=3)  # only cells that control shares with main2d
    tasks = {(c.study.name, c.preset): c.tasks() for c in gather(other, seeds=3)[0]}
    assert "pneumonia" in tasks[("main2d", "cpu")]
    assert all("pneumonia" not in t for (name, _), t in tasks.items() if name == "control")
