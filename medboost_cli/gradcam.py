"""Grad-CAM maps of a baseline run and its booster run side by side (the paper's Figure 3), with pytorch-grad-cam.

Each backbone family declares where Grad-CAM reads it (``BackboneFamily.gradcam``): a ViT's last block's first
norm, its patch tokens reshaped to their grid (pytorch-grad-cam's guidance for ViTs: those tokens feed the
attention that CLS reads, so their gradient is not zero), a ResNet's last stage. The booster sits after that
layer in both families, so both maps explain the same place of the network. The map is for each image's true
class. A family without a target (the 3D ones) is one error line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .data import load_dataset
from .engine import load_run, make_transforms
from .errors import ConfigError, MedboostError, ResultsError
from .evaluation import run_data_dir
from .fileio import save_figure
from .models.backbones import gradcam_target
from .recipes import saved_recipe
from .results import find_run


def partner_run_id(row: dict) -> str:
    """The paired run: same configuration and seed, booster none <-> the run's booster (rllm for a baseline)."""
    recipe = saved_recipe(row["config_json"])
    if not recipe.family.gradcam:
        raise ConfigError(f"Grad-CAM pairs a backbone with its booster run; {row['run_id']} is a {recipe.model} run")
    mode = "rllm" if recipe.booster.mode == "none" else "none"
    return recipe.model_copy(update={"booster": recipe.booster.model_copy(update={"mode": mode})}).run_id()


def gradcam_maps(model: nn.Module, backbone_name: str, x: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (n, H, W), each scaled to [0, 1] by pytorch-grad-cam, of ``model`` (a ``Classifier`` whose
    backbone is the registered ``backbone_name``) for the classes ``labels`` on the prepared input ``x``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target = gradcam_target(backbone_name, model.backbone)
    with GradCAM(model=model, target_layers=[target.layer], reshape_transform=target.reshape) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in labels])


def _paired_runs(run: str, results_dir: Path) -> tuple[str, str]:
    """(baseline run id, booster run id) of ``run`` and its partner, both present in ``results_dir``."""
    first = find_run(Path(results_dir), run)
    partner = partner_run_id(first)
    try:
        find_run(Path(results_dir), partner)
    except MedboostError:
        raise ResultsError(f"the paired run {partner} of {first['run_id']} is not in {results_dir}; train it first "
                            f"(same command with --booster {'rllm' if first['booster'] == 'none' else 'none'})") from None
    return (first["run_id"], partner) if first["booster"] == "none" else (partner, first["run_id"])


def gradcam_figure(run: str, results_dir: Path, data_dir: Path | None, n_images: int, out_dir: Path) -> list[Path]:
    """Grad-CAM maps of a run and its paired run on ``n_images`` test images; ``data_dir`` None: the folder the
    run was trained on (``evaluation.run_data_dir``)."""
    ids = _paired_runs(run, results_dir)
    loaded = [load_run(i, results_dir) for i in ids]
    data_dir = run_data_dir(loaded[0][0], data_dir)
    recipe = loaded[0][1]
    task = recipe.task_info
    for _, rec, built in loaded:  # before the data is read: a backbone without a target is one error line
        gradcam_target(rec.backbone.name, built.model.backbone)
    data = load_dataset(task, recipe.data.size, Path(data_dir), verify=recipe.data.verify)
    test = data.splits["test"]
    n = min(n_images, len(test))
    images, labels = test.images[:n], test.labels[:n, 0]
    maps, probs = [], []
    for _, rec, built in loaded:
        model = built.model.float() if next(built.model.parameters()).dtype != torch.float32 else built.model
        _, eval_tf = make_transforms(rec, model.backbone)
        x = eval_tf(images.to(next(model.parameters()).device))
        maps.append(gradcam_maps(model, rec.backbone.name, x, labels))
        with torch.no_grad():
            probs.append(model(x).float().softmax(-1)[torch.arange(n), labels].cpu().numpy())
    title = f"Grad-CAM, {task.flag}: {ids[0]} vs {ids[1]}"
    return _draw(images, labels, maps, probs, loaded[1][0]["booster"], title, out_dir / f"gradcam-{ids[1]}",
                 eval_tf.resize)


def _draw(images, labels, maps, probs, booster: str, title: str, stem: Path, resize) -> list[Path]:
    """One row per image: the image, the baseline's map, the booster run's map; written as PNG and PDF. The image
    is drawn where the model saw it (``resize``: interpolated to the input, or padded in its centre)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    size = maps[0].shape[-1]
    for i in range(n):
        img = images[i].float().mean(0)[None, None] / 255.0
        img = torch.nn.functional.interpolate(img, size=resize.sample_shape(img.shape[2:], size), mode="bilinear")
        img = resize.place(img, size)[0, 0].numpy()
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 0].set_title(f"test #{i}, class {int(labels[i])}", fontsize=8)
        for j, name in ((1, "baseline"), (2, f"+ {booster}")):
            axes[i, j].imshow(img, cmap="gray")
            axes[i, j].imshow(maps[j - 1][i], cmap="jet", alpha=0.45)
            axes[i, j].set_title(f"{name}: p(true) {probs[j - 1][i]:.2f}", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{ext}")
        save_figure(fig, path, dpi=130)
        paths.append(path)
    plt.close(fig)
    return paths
