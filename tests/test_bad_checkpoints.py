"""A damaged checkpoint is one ``model file error:`` line (exit 4) before any of it is loaded; a diverging run ends
as a failed run that says so (exit 2); every file medboost writes goes through the one atomic writer (fileio)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from medboost_cli import attempts
from medboost_cli.results import ResultsDir, load_results

from .conftest import write_medmnist
from .fault_fixtures import completed, folder, snapshot, train_args  # noqa: F401 (fixtures)
from .test_cli import assert_one_line_error, run
from .test_faults import _diverges


# ------------------------------------------------------------------------------------------ damaged checkpoints


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Path, Path, str]:
    """A tiny run interrupted after its first epoch: its last.pt and best.pt wait for --resume."""
    from medboost_cli import engine

    root = tmp_path_factory.mktemp("interrupted")
    write_medmnist(root / "d", "breast")
    original = engine.Run.save

    def save(self, improved):
        original(self, improved)
        raise KeyboardInterrupt

    engine.Run.save = save
    try:
        assert run(*train_args(root / "d", root / "r")).returncode == 130
    finally:
        engine.Run.save = original
    (row,) = (root / "r" / "runs").glob("*.parquet")
    return root / "d", root / "r", row.stem


def _edit(path: Path, change) -> None:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def _other_models_optimizer(ckpt) -> None:
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(other.parameters())
    other(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    ckpt["optimizer"] = optimizer.state_dict()


def _optimizer_shapes(ckpt) -> None:
    state = ckpt["optimizer"]["state"]
    first = next(iter(state))
    state[first]["exp_avg"] = torch.zeros(7, 7)


def _wrong_shape(ckpt) -> None:
    name = next(iter(ckpt["trainable"]))
    ckpt["trainable"][name] = torch.zeros(5, 3)


CHECKPOINTS = {  # id -> (which file, the damage, what the line says); last.pt is read by --resume, best.pt by evaluate
    "last-format-only": ("last", lambda c: [c.pop(k) for k in list(c) if k != "format"], "it lacks epoch, history"),
    "last-optimizer-of-another-model": ("last", _other_models_optimizer,
                                        "optimizer state comes from another model (parameter groups of [4] tensors"),
    "last-optimizer-shapes": ("last", _optimizer_shapes, "optimizer state comes from another model (exp_avg"),
    "last-weights-wrong-shape": ("last", _wrong_shape, "its weights have the wrong shapes"),
    "last-history-not-a-list": ("last", lambda c: c.update(history="x"), "damaged entries: history is a str"),
    "best-wrong-shapes": ("best", _wrong_shape, "its weights have the wrong shapes"),
    "best-without-frozen-hash": ("best", lambda c: c.pop("frozen_sha256"), "it lacks frozen_sha256"),
    "best-without-trainable": ("best", lambda c: c.pop("trainable"), "it lacks trainable"),
    "best-weights-of-another-model": ("best", lambda c: c["trainable"].update(extra=torch.ones(1)),
                                      "its weights come from another model (missing none, unexpected extra)"),
    "best-weights-not-tensors": ("best", lambda c: c["trainable"].update(extra="text"), "not named tensors (extra)"),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_a_damaged_checkpoint_is_one_model_file_error_before_anything_is_loaded(name, interrupted, completed,
                                                                                tmp_path):
    which, damage, fragment = CHECKPOINTS[name]
    data, source, run_id = interrupted if which == "last" else completed
    results = Path(shutil.copytree(source, tmp_path / "r"))
    path = ResultsDir(results).last(run_id) if which == "last" else ResultsDir(results).best(run_id)
    _edit(path, damage)
    before = snapshot(results)
    if which == "last":
        result = run(*train_args(data, results, "--resume"))
    else:
        result = run("evaluate", run_id, "--data-dir", data, "--results-dir", results)
    assert_one_line_error(result, str(path), fragment, code=4)
    assert snapshot(results) == before


# ------------------------------------------------------------------------------------------ a diverging run


def _nan_val_scores(monkeypatch):
    from medboost_cli import engine

    real = engine.predict

    def predict(model, target, *args, **kwargs):
        scores, loss = real(model, target, *args, **kwargs)
        return scores * float("nan") if len(target.labels) == 16 else scores, loss  # the val split: 16 images

    monkeypatch.setattr(engine, "predict", predict)


@pytest.mark.parametrize("inject, args, fragment", [
    (lambda m: None, ["--lr", "1e10"], "diverged at epoch 1 of 2"),
    (_diverges, [], "(training loss: nan)"),
    (_nan_val_scores, [], "(val scores: NaN or infinite)"),
], ids=["lr-1e10", "nan-loss", "nan-val-scores"])
def test_a_diverging_run_ends_as_a_failed_run_that_says_what_to_try(inject, args, fragment, completed, tmp_path,
                                                                   monkeypatch):
    data, _, _ = completed
    with monkeypatch.context() as patched:
        inject(patched)
        result = run(*train_args(data, tmp_path / "r", *args))
    assert_one_line_error(result, "diverged at epoch", fragment, "lower train.lr", "train.grad_clip", code=2)
    (row,) = load_results(tmp_path / "r").to_dict("records")
    assert row["status"] == "failed" and "diverged at epoch" in row["error"]


# ------------------------------------------------------------------------------------------ one writer


WRITERS = {"write_text", "write_bytes", "to_csv", "to_parquet", "savefig", "touch", "savez", "savez_compressed",
           "write_table", "save"}
ATOMIC = {"atomic_write", "atomic_write_file"}
ALLOWED = {("fileio.py", None), ("locks.py", "os.open")}  # the writer itself; lock files (created with O_EXCL)


def _writes(tree) -> list[tuple[int, str]]:
    """(line, call) of every call in ``tree`` that writes a file other than through fileio."""
    import ast

    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def through_fileio(node) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ATOMIC:
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, text = node.func, ast.unparse(node.func)
        if isinstance(func, ast.Attribute) and func.attr in WRITERS and (func.attr != "save" or text == "torch.save"):
            found.append((node.lineno, text))
        elif text == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                    and set(a.value) & set("wax+") for a in node.args[1:2] + [
                                        k.value for k in node.keywords if k.arg == "mode"]):
            found.append((node.lineno, text))
        elif text == "os.open" and re.search(r"O_(WRONLY|RDWR|CREAT)", ast.unparse(node)):
            found.append((node.lineno, text))
    return [(line, text) for line, text in found if not through_fileio(_node_at(tree, line, text))]


def _node_at(tree, line, text):
    import ast

    return next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == line
                and ast.unparse(n.func) == text)


def test_every_file_is_written_through_the_one_atomic_writer():
    import ast

    package = Path(attempts.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for line, text in _writes(ast.parse(path.read_text())):
            if (path.name, None) not in ALLOWED and (path.name, text) not in ALLOWED:
                offenders.append(f"{path.relative_to(package)}:{line} {text}")
    assert not offenders, f"write these through medboost_cli.fileio: {offenders}"


def test_the_writer_check_finds_a_direct_write():
    import ast

    tree = ast.parse("import torch\ndef f(p, x):\n    torch.save(x, p)\n    open(p, 'w').write('x')\n"
                     "    atomic_write(p, lambda tmp: torch.save(x, tmp))\n    p.write_text('x')\n")
    assert sorted(text for _, text in _writes(tree)) == ["open", "p.write_text", "torch.save"]
