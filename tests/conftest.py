"""Shared fixtures: MedMNIST-format files written by the tests, tiny LM checkpoints, the real files in ../shared.

The tests never use the network, and behave the same whether or not the machine has one: the Hugging Face
libraries are told they are offline (also in the subprocesses the tests start, which inherit the environment),
and in the test processes any connection or name lookup beyond this machine fails at once (see _no_network).

Precision: ``make test`` runs the suite with precision ``auto`` pinned to fp32 ($MEDBOOST_AUTO_PRECISION), then a
numerical core of it with ``auto`` forced to bf16, so every CPU sees both. Tests that compare runs made the same
way (resume, launchers, allocators, repeated seeds) expect identical numbers in whichever precision: the same
kernels on the same batches. Tests that compare two computations of one quantity (a batch over processes or in
chunks against one pass) pin fp32, or bound bf16's rounding explicitly. Where the variable is unset the suite
sets it to what the device's instructions say (``hardware.auto_is_bf16``), so that no test run measures which
precision is faster (precision.py) and every test sees one precision; tests/test_precision.py removes it to
test that measurement.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# Tests run in parallel (pytest -n 2): one thread per worker and per subprocess, so they do not oversubscribe.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from medboost_cli.hardware import AUTO_PRECISION_ENV, auto_is_bf16  # noqa: E402
from medboost_cli.tasks import resolve_task  # noqa: E402

_AUTO_BY_DEVICE = not os.environ.get(AUTO_PRECISION_ENV, "").strip()  # no precision pinned: the device's rule
if _AUTO_BY_DEVICE:  # also in the subprocesses the tests start, which inherit it
    os.environ[AUTO_PRECISION_ENV] = "bf16" if auto_is_bf16(torch.device("cpu")) else "fp32"

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = Path(os.environ.get("MEDBOOST_SHARED_DATA", ROOT.parent / "shared" / "medmnist"))

# A tiny configuration that trains in seconds: the CPU preset with a 1-block, 32-wide ViT.
TINY_SETS = [
    "data.verify=false", "backbone.dim=32", "backbone.depth=1", "backbone.heads=2", "train.epochs=2",
    "train.batch_size=16", "train.eval_batch_size=64", "train.warmup_epochs=0",
]


def pytest_report_header(config):
    """The CPU and the precision ``auto`` resolves to, at the top of every run, so a failure reads against them."""
    from medboost_cli.hardware import cpu_summary

    how = "decided by the CPU" if _AUTO_BY_DEVICE else f"{AUTO_PRECISION_ENV}={os.environ.get(AUTO_PRECISION_ENV)}"
    auto = "bf16" if auto_is_bf16(torch.device("cpu")) else "fp32"
    return [f"cpu: {cpu_summary()}", f"precision auto -> {auto} ({how})"]


def pytest_collection_modifyitems(items):
    """The ``slow`` tests first: with ``-n 2`` they start at once and the other worker works through the rest
    meanwhile, instead of one worker running them alone at the end while the other sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_LOCAL = {None, "localhost", "127.0.0.1", "::1", "0.0.0.0"}


@pytest.fixture(autouse=True)
def _results_default(tmp_path, monkeypatch):
    """A test that names no results folder writes into its own, never into the working directory's results/; and
    no tracker is on unless the test asks (a developer's $MEDBOOST_TRACK stays out); precision auto's measurements
    are cached in the test's folder."""
    monkeypatch.setenv("MEDBOOST_RESULTS", str(tmp_path / "default-results"))
    monkeypatch.setenv("MEDBOOST_PRECISION_CACHE", str(tmp_path / "precision.json"))  # not the user's cache
    monkeypatch.delenv("MEDBOOST_TRACK", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _hash_cache(tmp_path_factory):
    """Checkpoint hashes (file_hashes.py) are kept in the test run's own folder, never in the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDBOOST_HASH_CACHE", str(tmp_path_factory.mktemp("hash-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Fail any name lookup or connection beyond this machine, as an unplugged cable would (tests that need an
    unreachable server get one whatever the machine's network; a test that reaches out by mistake fails)."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOCAL and not str(host).startswith("127."):
            raise socket.gaierror(socket.EAI_NONAME, f"tests run offline: no lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL \
                and not str(address[0]).startswith("127."):
            raise OSError(101, f"tests run offline: no connection to {address[0]}")  # ENETUNREACH
        return real_connect(self, address)

    mp = pytest.MonkeyPatch()
    mp.setattr(socket, "getaddrinfo", getaddrinfo)
    mp.setattr(socket.socket, "connect", connect)
    yield
    mp.undo()


def write_medmnist(root: Path, task_name: str, size: int = 28, n: tuple[int, int, int] = (48, 16, 24),
                   seed: int = 0) -> Path:
    """Write a small file in MedMNIST's npz layout whose labels are learnable from the images."""
    task = resolve_task(task_name)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        if task.multilabel:
            labels = rng.integers(0, 2, size=(count, task.n_classes))
            signal = labels[:, 0]
        else:
            labels = (np.arange(count) % task.n_classes)[:, None]
            rng.shuffle(labels)
            signal = labels[:, 0]
        shape = (count,) + (size,) * task.dims + ((3,) if task.n_channels == 3 else ())
        images = rng.integers(0, 90, size=shape)
        brightness = (signal * 160 // max(1, task.n_classes - 1)).reshape((count,) + (1,) * (len(shape) - 1))
        images[(slice(None),) + (slice(0, size // 2),) * task.dims] += brightness
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / task.filename(size)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "medmnist"
    write_medmnist(root, "breast")
    return root


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> tuple[Path, object]:
    """A 3-layer LLaMA with grouped-query attention, saved as sharded safetensors with an index file."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
        vocab_size=50, rms_norm_eps=1e-6, attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights, so a wrongly mapped norm shows
        for layer in model.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
        model.model.norm.weight.uniform_(0.5, 1.5)  # the final norm: booster.lm_norm=pretrained differs from unit
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder, max_shard_size="40KB", safe_serialization=True)
    assert (folder / "model.safetensors.index.json").exists()
    return folder, model


def shared_file(name: str) -> Path:
    path = SHARED_MEDMNIST / name
    if not path.is_file():
        pytest.skip(f"{path} is not present (set MEDBOOST_SHARED_DATA to the folder with the real MedMNIST files)")
    return path
