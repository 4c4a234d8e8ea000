"""The ResNet family: timm's ResNet-18 (``resnet18``), MedMNIST v2's baseline model.

Stems (``backbone.stem``):

* ``conv``: MedMNIST v2's 28x28 form. timm's 7x7 stride-2 stem convolution is replaced by a 3x3 stride-1 one and
  its max-pool removed, so a 28x28 image leaves layer4 as a 4x4 map. Input size 28 unless ``backbone.img_size``
  says otherwise.
* ``patch``: timm's standard stem (7x7 stride-2 convolution, then a stride-2 max-pool), for 224x224 input (a 7x7
  map after layer4). Input size 224 unless ``backbone.img_size`` says otherwise.

``backbone.pretrained`` loads timm's ImageNet weights (``backbone.weights`` or the hub, as for the ViTs); with the
``conv`` stem its new 3x3 convolution starts from timm's own init (Kaiming normal).

Tokens: layer4's feature map (B, C, h, w), C = 512, becomes h*w tokens, and a token holding their mean is put
first, as a CLS-like token. The booster sees all 1 + h*w tokens; ``pool`` reads the first. Without a booster this
is ResNet's global average pooling before its linear head; with one, the pooled token has been through F_L's
attention over every position, as a ViT's CLS token has.

AdamW decays every convolution and linear weight and no 1-D parameter (BatchNorm weights, biases). Grad-CAM reads
layer4's output, pytorch-grad-cam's target for ResNets, a (B, C, h, w) map already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ...errors import ConfigError
from .family import BackboneFamily, CamTarget
from .timm_weights import check_weights, create_timm_model

if TYPE_CHECKING:  # the recipe schema imports the model layer (models/families)
    from ...recipes import BackboneConfig

STAGE_STRIDES = (1, 2, 2, 2)  # timm ResNets' layer1..layer4
DEFAULT_SIZES = {"conv": 28, "patch": 224}  # input size per stem


@dataclass(frozen=True)
class ResNetSpec:
    timm_name: str


def _down(side: int, stride: int) -> int:
    """A side after a padded convolution or max-pool of this stride (timm's ResNets pad to keep ceil(side/s))."""
    return -(-side // stride)


class ResNetBackbone(nn.Module):
    """A timm ResNet without its head: layer4's map as tokens, their mean first (see the module docstring)."""

    dims = 2

    def __init__(self, resnet: nn.Module, input_size: int, in_chans: int):
        super().__init__()
        self.resnet = resnet
        self.num_features = resnet.num_features
        self.input_size, self.in_chans = input_size, in_chans
        side = _down(input_size, resnet.conv1.stride[0])
        if isinstance(resnet.maxpool, nn.MaxPool2d):
            side = _down(side, resnet.maxpool.stride)
        for stride in STAGE_STRIDES:
            side = _down(side, stride)
        self.grid = side  # layer4's map is grid x grid
        self.n_tokens = side * side + 1
        cfg = resnet.pretrained_cfg or {}
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))

    def forward_tokens(self, x: torch.Tensor, boost: nn.Module | None = None) -> torch.Tensor:
        tokens = self.resnet.forward_features(x).flatten(2).transpose(1, 2)  # (B, h*w, C)
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        return boost(x) if boost is not None else x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]

    def no_weight_decay(self) -> set[str]:
        return set()


def gradcam_target(backbone: ResNetBackbone) -> CamTarget:
    return CamTarget(backbone.resnet.layer4)


RESNETS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("resnet18"),  # MedMNIST v2's ResNet-18 (28) and (224)
}

# The backbone.* keys a ResNet reads; others must stay at their defaults.
RESNET_KEYS = frozenset({"name", "pretrained", "weights", "img_size", "in_chans", "stem", "drop_path",
                         "booster_site"})


def check_resnet(spec: ResNetSpec, cfg: BackboneConfig) -> int:
    """The ResNet family's checks of the backbone.* keys; the input size."""
    cfg.check_keys(RESNET_KEYS, "a ResNet")
    if cfg.booster_site not in (None, "tokens"):
        raise ConfigError(f"backbone.booster_site={cfg.booster_site} is for ViViT; a ResNet has one site, 'tokens'")
    if cfg.in_chans < 1:
        raise ConfigError(f"backbone.in_chans={cfg.in_chans} must be a positive integer")
    img_size = cfg.img_size or DEFAULT_SIZES[cfg.stem]
    if img_size < 1:
        raise ConfigError(f"backbone.img_size={img_size} must be a positive integer")
    check_weights(cfg)  # the weights file, before any data is read
    return img_size


def build_resnet(spec: ResNetSpec, cfg: BackboneConfig) -> ResNetBackbone:
    img_size = check_resnet(spec, cfg)
    resnet = create_timm_model(spec.timm_name, cfg, in_chans=cfg.in_chans, num_classes=0,
                               drop_path_rate=cfg.drop_path)
    if cfg.stem == "conv":
        resnet.conv1 = nn.Conv2d(cfg.in_chans, resnet.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        resnet.maxpool = nn.Identity()
    return ResNetBackbone(resnet, img_size, cfg.in_chans)


FAMILY = BackboneFamily(what="a ResNet", dims=2, variants=RESNETS, keys=RESNET_KEYS, build=build_resnet,
                        gradcam=gradcam_target, check=check_resnet)
