"""What building a model returns (``BuiltModel``), and the checks and counts made on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..errors import ConfigError
from .llm_loading import LoadedLayer, LoadedStack


@dataclass
class BuiltModel:
    model: nn.Module  # a Classifier, or a PneumoLLM; either has the vision encoder as ``backbone``
    llm: LoadedLayer | None  # the LM layer and where it came from (None for mode none/mlp, and for PneumoLLM)
    frozen_sha256: str | None  # hash of the frozen weights (F_L; PneumoLLM: its LM and frozen vision encoder),
    # stored in checkpoints instead of the weights
    stack: LoadedStack | None = None  # PneumoLLM's LM layers

    @property
    def lm_files(self) -> tuple[Path, ...]:
        """The LM checkpoint files read to build it (config, index file, the shards holding its layers)."""
        loaded = self.llm or self.stack
        return loaded.files if loaded is not None else ()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def check_frozen_hash(built: BuiltModel, expected: str | None, where: str) -> None:
    if expected != built.frozen_sha256:
        raise ConfigError(
            f"{where}: the frozen LM layer differs from the one this run was trained with "
            f"(hash {str(built.frozen_sha256)[:12]} vs {str(expected)[:12]}); point booster.llm (and, for PneumoLLM, "
            f"backbone.weights) at the same checkpoint"
        )
