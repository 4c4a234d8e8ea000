"""R-LLM's model: a backbone produces tokens, the booster wraps them, a linear head reads the pooled CLS token."""

from __future__ import annotations

import torch
import torch.nn as nn

from .booster import Booster


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, booster: Booster, n_outputs: int):
        super().__init__()
        self.backbone = backbone
        self.booster = booster
        self.head = nn.Linear(backbone.num_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_tokens(x, self.booster)  # the backbone applies the booster at its site
        return self.head(self.backbone.pool(tokens))
