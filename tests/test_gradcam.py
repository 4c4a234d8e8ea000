"""Grad-CAM (medboost_cli/gradcam.py): every backbone family that declares a Grad-CAM target gives maps that are
neither all zero nor constant, at random init and after a short training, in the figure `report gradcam` draws;
a family without a target is one error line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medboost_cli.errors import ConfigError
from medboost_cli.models import Classifier
from medboost_cli.models.backbones import BACKBONES, FAMILIES, build_backbone, gradcam_target
from medboost_cli.models.booster import Booster
from medboost_cli.recipes import BackboneConfig, load_recipe

from .conftest import write_medmnist

# One small backbone per family that declares a Grad-CAM target, and its --set keys on the CPU preset.
SMALL = {
    "a 2D ViT": ("vit-mini", dict(dim=32, depth=2, heads=2)),
    "a ResNet": ("resnet18", dict(stem="conv")),
}


def varies(m: np.ndarray) -> bool:
    return bool(np.isfinite(m).all() and m.max() - m.min() > 1e-3)


def assert_informative(maps: np.ndarray) -> None:
    """Each image's map is finite and varies over the image (an all-zero map is constant too)."""
    assert maps.ndim == 3 and np.isfinite(maps).all()
    for i, m in enumerate(maps):
        assert m.max() - m.min() > 1e-3, f"image {i}: the Grad-CAM map is constant ({m.min():.3g})"


def test_every_family_that_claims_grad_cam_is_checked_here():
    assert {f.what for f in FAMILIES if f.gradcam is not None} == set(SMALL)


def _classifier(name: str, keys: dict, mode: str, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneConfig(name=name, **keys), 2)
    booster = Booster(mode, backbone.num_features, None, 48, "trunc_normal")
    return Classifier(backbone, booster, 2).eval()


@pytest.mark.parametrize("family", list(SMALL))
@pytest.mark.parametrize("mode", ["none", "mlp"])
def test_maps_at_random_init_are_not_constant(family, mode):
    from medboost_cli.gradcam import gradcam_maps

    name, keys = SMALL[family]
    model = _classifier(name, keys, mode)
    size = model.backbone.input_size
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model(x).argmax(-1)  # a class with evidence: Grad-CAM's ReLU zeroes a map of one against
    maps = gradcam_maps(model, name, x, predicted)
    assert maps.shape == (3, size, size)
    assert_informative(maps)


def test_a_vits_final_norm_gives_a_constant_map():
    """Why the ViT family reads the last block's first norm: after the final norm only CLS reaches the head, so the
    patch tokens' gradient, and the map, are zero (what ``assert_informative`` catches)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _classifier("vit-mini", SMALL["a 2D ViT"][1], "none")
    reshape = gradcam_target("vit-mini", model.backbone).reshape
    with GradCAM(model=model, target_layers=[model.backbone.final_norm], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=torch.randn(2, 3, 28, 28), targets=[ClassifierOutputTarget(0)] * 2)
    assert np.abs(maps).max() == 0.0
    with pytest.raises(AssertionError, match="constant"):
        assert_informative(maps)


@pytest.mark.parametrize("name", [n for n, f in BACKBONES.items() if f.gradcam is None])
def test_a_family_without_a_target_is_one_error_line(name):
    with pytest.raises(ConfigError) as e:
        gradcam_target(name, None)
    assert str(e.value).startswith(f"Grad-CAM: backbone '{name}' (") and "\n" not in str(e.value)
    assert "maps are drawn for runs with one of vit-s, " in str(e.value) and "resnet18" in str(e.value)


@pytest.mark.parametrize("family", list(SMALL))
def test_the_figure_of_a_short_training_shows_maps(tmp_path, monkeypatch, family):
    """`report gradcam` on a baseline run and its booster run (1 epoch each, synthetic BreastMNIST): in both, the maps
    vary, and the figure is written."""
    import medboost_cli.gradcam as gradcam
    from medboost_cli.engine import train

    name, keys = SMALL[family]
    write_medmnist(tmp_path / "d", "breast")
    sets = ["data.verify=false", "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0",
            f"backbone.name={name}"] + [f"backbone.{k}={v}" for k, v in keys.items()]
    rows = [train(load_recipe("breast", preset="cpu", flags=[("--booster", "booster.mode", m)], sets=sets),
                  tmp_path / "d", tmp_path / "r", log=lambda *a: None) for m in ("none", "rllm")]
    seen = []
    real = gradcam.gradcam_maps
    monkeypatch.setattr(gradcam, "gradcam_maps", lambda *a: seen.append(real(*a)) or seen[-1])
    paths = gradcam.gradcam_figure(rows[1]["run_id"], tmp_path / "r", tmp_path / "d", 6, tmp_path / "out")
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].suffix == ".pdf"
    assert len(seen) == 2
    for maps in seen:
        # the true class's maps: Grad-CAM's ReLU zeroes the map of an image that is evidence against the class (as
        # an image can be for a model trained one epoch), but a run's maps are never all constant, as they are when
        # the target layer's gradient is zero
        assert maps.shape == (6, 28, 28) and np.isfinite(maps).all()
        assert sum(varies(m) for m in maps) >= 3


def test_a_3d_run_is_refused_before_its_data_is_read(tmp_path):
    from medboost_cli.engine import train
    from medboost_cli.gradcam import gradcam_figure

    write_medmnist(tmp_path / "d", "adrenal3d")
    sets = ["data.verify=false", "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0", "backbone.dim=32",
            "backbone.depth=1", "backbone.heads=2", "backbone.dim_head=16"]
    rows = [train(load_recipe("adrenal3d", preset="cpu", flags=[("--booster", "booster.mode", m)], sets=sets),
                  tmp_path / "d", tmp_path / "r", log=lambda *a: None) for m in ("none", "rllm")]
    with pytest.raises(ConfigError, match=r"^Grad-CAM: backbone 'vit3d' \(a 3D ViT\) has no Grad-CAM target"):
        gradcam_figure(rows[0]["run_id"], tmp_path / "r", tmp_path / "nowhere", 2, tmp_path / "out")
