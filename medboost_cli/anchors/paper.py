"""The paper (Lai et al. 2024): its numbers stay with the studies (recipes/studies/*.yaml); here is how they were
made, from the paper and its released code (REFERENCE.md, section 2): 2D images of 28 upsampled to ViT-S's 224
with ImageNet weights, 3D volumes of 28 into backbones trained from scratch, one number per cell (no spread), and
the epoch chosen on the test split."""

from __future__ import annotations

from .protocol import Protocol
from .source import AnchorSource


def protocol(dims: int) -> Protocol:
    if dims == 3:
        return Protocol(size=28, input=28, pretrained=False, seeds=1, selection="test")
    return Protocol(size=28, input=224, resize="upsample", pretrained=True, seeds=1, selection="test")


SOURCE = AnchorSource(
    key="paper", citation="Lai et al. 2024",
    reference="Lai et al., Residual-based Language Models are Free Boosters for Biomedical Imaging Tasks, CVPR "
              "Workshops 2024, arXiv 2403.17343",
    about="the paper's Tables 1-6: ViT-S (2D, ImageNet weights, 28 upsampled to 224) and ViT3D/ViViT (3D, from "
          "scratch) without and with R-LLM; one number per cell, epoch selected on the test split",
    protocol=protocol)
