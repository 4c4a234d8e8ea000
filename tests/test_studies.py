"""Studies expand into paired runs; `ablate` is idempotent."""

from __future__ import annotations

import pytest

from medboost_cli.errors import MedboostError
from medboost_cli.studies import expand, load_study, run_study, study_names

from .conftest import TINY_SETS, write_medmnist


def test_all_studies_load_and_expand_under_both_configurations():
    assert study_names() == ["capacity", "control", "layers", "main2d", "main3d", "pneumollm-components",
                             "pneumollm-tokens", "residual"]
    sizes = {"main2d": 6 * 2, "main3d": 4 * 3 * 2, "capacity": 2 * 4, "residual": 2 * 4, "control": 2 * 5,
             "pneumollm-components": 5, "pneumollm-tokens": 5}
    for name, n in sizes.items():
        for preset in (None, "cpu"):
            assert len(expand(load_study(name, preset), seeds=1, preset=preset)) == n, (name, preset)
    assert len(expand(load_study("layers"), seeds=1)) == 2 * 6  # none + 5 layers
    assert len(expand(load_study("layers", "cpu"), seeds=1, preset="cpu")) == 2 * 7  # none + MiniLM's 6 layers


def test_residual_study_expansion():
    runs = expand(load_study("residual"), tasks=["adrenal3d"], seeds=2)
    assert [(r.variant, r.seed) for r in runs] == [(v, s) for v in ("none", "rllm", "out", "hybrid") for s in (0, 1)]
    assert {r.backbone for r in runs} == {"vivit-m"} and {r.task for r in runs} == {"adrenal3d"}
    assert runs[2].command() == "medboost train adrenal3d --backbone vivit-m --booster rllm --seed 0"
    assert len({r.run_id for r in runs}) == 8 and len({r.cell for r in runs}) == 4


def test_paired_runs_differ_only_by_booster_and_share_seeds():
    runs = expand(load_study("control"), tasks=["breast"], seeds=2, preset="cpu")
    by = {(r.variant, r.seed): r.recipe for r in runs}
    for seed in (0, 1):
        base, boosted = by[("none", seed)], by[("rllm-random", seed)]
        assert base.seed == boosted.seed == seed
        assert base.model_dump(exclude={"booster"}) == boosted.model_dump(exclude={"booster"})
        assert boosted.booster.llm_init == "random" and boosted.booster.mode == "rllm"


def test_studies_share_runs_across_tables():
    residual = {r.run_id for r in expand(load_study("residual"), seeds=1)}
    capacity = {r.run_id for r in expand(load_study("capacity"), seeds=1)}
    assert {r for r in residual & capacity if "-none-" in r or "-rllm-" in r} == residual & capacity
    assert len(residual & capacity) == 4  # none and rllm on two tasks


def test_comparisons_and_bad_studies(tmp_path, monkeypatch):
    study = load_study("capacity")
    assert study.comparisons() == [("mlp", "none"), ("rllm", "none"), ("rllm-ft", "none"), ("rllm", "mlp"),
                                   ("rllm", "rllm-ft")]
    with pytest.raises(MedboostError, match="unknown study 'tabel6'; available: capacity, control"):
        load_study("tabel6")
    with pytest.raises(MedboostError, match="unknown task 'lung'"):
        expand(study, tasks=["lung"])
    with pytest.raises(MedboostError, match="study 'capacity' has no 2D backbone for task 'breast'"):
        expand(study, tasks=["breast"])
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "bad.yaml").write_text("title: t\ntasks: [breast]\nvariants: {none: {booster: nope}}\n")
    monkeypatch.setenv("MEDBOOST_RECIPES", str(tmp_path))
    with pytest.raises(MedboostError, match=r"bad.yaml: bad study key 'variants.none.booster': 'nope'"):
        load_study("bad")


def test_layer_variants_carry_their_layer_as_data():
    study = load_study("layers", "cpu")
    variant = study.all_variants()["rllm-L3"]
    assert (variant.layer, study.label("rllm-L3"), study.label("none")) == (3, "layer 3", "none (baseline)")
    runs = [r for r in expand(study, tasks=["breast"], seeds=1, preset="cpu") if r.variant == "rllm-L3"]
    assert runs[0].sets == ("booster.layer=3",) and runs[0].recipe.booster.layer == 3


def test_studies_declare_their_tables_and_the_papers_values():
    main3d, capacity = load_study("main3d"), load_study("capacity")
    assert [(main3d.table_key(t), t.kind) for t in main3d.tables] == [("table3", "main"), ("table4", "prior")]
    assert main3d.tables[0].paper_value("adrenal3d", "rllm", "auc", "vivit-s") == 82.12
    assert main3d.tables[0].paper_value("adrenal3d", "rllm", "auc", "vit-mini") is None
    assert capacity.tables[0].paper_value("fracture3d", "rllm-ft", "params") == 1066.62
    assert load_study("main2d").tables[1].prior["ViT-S+R-LLM"][2] is None  # blank in the paper
    assert [capacity.label(v) for v in capacity.all_variants()] == ["", "MLP", "R-LLM", "R-LLM (FT)"]


GOOD = "title: t\ntasks: [breast]\nvariants: {none: {booster: none}, rllm: {booster: rllm}}\n"


@pytest.mark.parametrize("tables, message", [
    ("[{kind: main, caption: c, paper: {breast: {rllmx: {acc: 1}}}}]",
     "bad study key 'tables.0.paper.breast': 'rllmx' is not one of its variants (none, rllm)"),
    ("[{kind: main, caption: c, paper: {derma: {rllm: {acc: 1}}}}]",
     "bad study key 'tables.0.paper': 'derma' is not one of its tasks (breast)"),
    ("[{kind: main, caption: c, paper_by_backbone: {vit-z: {}}}]",
     "bad study key 'tables.0.paper_by_backbone': 'vit-z' is not one of its backbones"),
    ("[{kind: chart, caption: c}]", "bad study key 'tables.0.kind': 'chart'"),
    ("[{kind: main, caption: c, paper: {breast: {rllm: {f1: 1}}}}]", "bad study key 'tables.0.paper.breast.rllm.f1"),
    ("[{kind: main, caption: c, variants: [none]}]", "bad study key 'tables.0.variants': a main table shows two"),
    ("[{kind: ablation, caption: c, variants: [none, rlm]}]",
     "bad study key 'tables.0.variants': 'rlm' is not one of its variants"),
    ("[{kind: layers, caption: c}]", "bad study key 'tables.0.metrics': a layers table shows one metric"),
    ("[{kind: prior, caption: c, metrics: [acc], prior: {X: [1, 2]}}]",
     "bad study key 'tables.0.prior.X': 2 values for its 1 tasks"),
    ("[{kind: ablation, caption: '{backbone}'}]", "bad study key 'tables.0.caption': '{backbone}'"),
    ("[{kind: ablation, caption: a}, {kind: layers, caption: b, metrics: [auc]}]",
     "bad study key 'tables.0.key': 'bad' names two of its tables"),
])
def test_bad_study_tables_fail_with_one_line_naming_file_and_key(tmp_path, monkeypatch, tables, message):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "bad.yaml").write_text(GOOD + f"tables: {tables}\n")
    monkeypatch.setenv("MEDBOOST_RECIPES", str(tmp_path))
    with pytest.raises(MedboostError) as e:
        load_study("bad")
    assert str(e.value).startswith(f"{tmp_path / 'studies' / 'bad.yaml'}: ") and "\n" not in str(e.value)
    assert message in str(e.value)


def test_ablate_runs_only_what_is_missing(tmp_path):
    from medboost_cli.engine import train

    write_medmnist(tmp_path / "d", "breast")
    runs = expand(load_study("control"), tasks=["breast"], seeds=1, preset="cpu",
                  extra_sets=TINY_SETS + ["train.epochs=1"])
    assert {r.backbone for r in runs} == {"vit-mini"}  # a study without backbones takes the recipe's
    calls = []

    def quiet_train(recipe, data_dir, results_dir, resume):
        calls.append(recipe.run_id())
        return train(recipe, data_dir, results_dir, resume=resume, log=lambda *a: None)

    first = run_study(runs, tmp_path / "d", tmp_path / "r", quiet_train, log=lambda *a: None)
    assert first == {"planned": 5, "skipped": 0, "busy": 0, "trained": 5} and len(calls) == 5
    second = run_study(runs, tmp_path / "d", tmp_path / "r", quiet_train, log=lambda *a: None)
    assert second == {"planned": 5, "skipped": 5, "busy": 0, "trained": 0} and len(calls) == 5


def test_ablate_resumes_only_runs_that_were_interrupted(tmp_path):
    runs = expand(load_study("control"), tasks=["breast"], seeds=1, preset="cpu", extra_sets=TINY_SETS)
    interrupted = runs[1].run_id
    (tmp_path / "r" / "checkpoints" / interrupted).mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / interrupted / "last.pt").write_bytes(b"")
    seen = {}

    def record(recipe, data_dir, results_dir, resume):
        seen[recipe.run_id()] = resume

    run_study(runs, tmp_path / "d", tmp_path / "r", record, log=lambda *a: None)
    assert seen == {r.run_id: r.run_id == interrupted for r in runs}


def test_pneumollm_studies_plan_pneumollm_runs_that_share_the_full_model():
    components = expand(load_study("pneumollm-components", "cpu"), seeds=1, preset="cpu")
    tokens = expand(load_study("pneumollm-tokens", "cpu"), seeds=1, preset="cpu")
    assert {r.recipe.model for r in components + tokens} == {"pneumollm"} and {r.backbone for r in tokens} == {"vit-mini"}
    full = next(r for r in components if r.variant == "pneumollm")
    assert full.run_id == next(r.run_id for r in tokens if r.variant == "m4")  # m = 4 is the full model's run
    assert full.command() == "medboost train pneumonia --backbone vit-mini --model pneumollm --seed 0 --preset cpu"
    assert [r.recipe.pneumollm.tokens for r in tokens] == [1, 2, 4, 8, 16]
    baseline = next(r.recipe.pneumollm for r in components if r.variant == "baseline")
    assert (baseline.engine, baseline.emitter, baseline.adapters) == (False, False, False)
    table6 = load_study("pneumollm-components").tables[0]
    assert table6.paper_value("pneumonia", "pneumollm", "auc") == 78.98


def test_a_variant_names_a_booster_mode_or_a_model_family(tmp_path, monkeypatch):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "bad.yaml").write_text(
        "title: t\ntasks: [breast]\nvariants: {none: {booster: none, model: pneumollm}}\n")
    monkeypatch.setenv("MEDBOOST_RECIPES", str(tmp_path))
    with pytest.raises(MedboostError, match="give an R-LLM variant its booster mode, a PneumoLLM variant"):
        load_study("bad")
