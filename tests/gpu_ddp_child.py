"""A child process of tests/test_gpu.py, started by torchrun on one process: the run's model in DDP over the process
group of the device (NCCL on CUDA, gloo on CPU) takes the same training steps as the same model alone.

A run on one process trains without DDP (distributed.wrap leaves one process's model alone), so here the wrapper
is asked for a world of two: the DDP module, its ignored frozen parameters and its all-reduce over the group are
those a run on several processes uses. Writes what it found as JSON to the path given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medboost_cli import distributed  # noqa: E402
from medboost_cli.bench_step import StepBench  # noqa: E402
from medboost_cli.recipes import load_recipe  # noqa: E402
from tests.conftest import TINY_SETS  # noqa: E402


def main(device: str, out: Path) -> None:
    recipe = load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", "rllm")],
                         sets=TINY_SETS + [f"train.device={device}", "train.precision=fp32"])
    alone, shared = StepBench.of(recipe), StepBench.of(recipe)
    cuda = alone.device.type == "cuda"
    device = torch.device("cuda", 0) if cuda else alone.device  # the one GPU: torchrun's LOCAL_RANK 0
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    with mock.patch.object(distributed, "world", lambda: distributed.World(size=2, local_size=2)):
        shared.runner = distributed.wrap(shared.model, device)
    for _ in range(2):
        alone.step()
        shared.step()
    diff = max((a - b).abs().max().item() for a, b in zip(alone.model.parameters(), shared.model.parameters()))
    out.write_text(json.dumps({"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                               "ddp": isinstance(shared.runner, torch.nn.parallel.DistributedDataParallel),
                               "device": str(next(shared.model.parameters()).device), "max_diff": diff}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
