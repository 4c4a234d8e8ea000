"""Grad-CAM maps of a baseline run and its booster run side by side (the paper's Figure 3), with pytorch-grad-cam.

The target layer is the backbone's final norm, whose input is the token sequence after the booster (for the
baseline, after the last block), so both maps explain the same place of the network. Class tokens are dropped
and the patch tokens reshaped to their grid; the map is for each image's true class.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data import load_dataset
from .engine import load_run, make_transforms
from .errors import ConfigError, MedboostError, ResultsError
from .recipes import saved_recipe
from .results import find_run


def partner_run_id(row: dict) -> str:
    """The paired run: same configuration and seed, booster none <-> the run's booster (rllm for a baseline)."""
    recipe = saved_recipe(row["config_json"])
    if not recipe.family.gradcam:
        raise ConfigError(f"Grad-CAM pairs a backbone with its booster run; {row['run_id']} is a {recipe.model} run")
    mode = "rllm" if recipe.booster.mode == "none" else "none"
    return recipe.model_copy(update={"booster": recipe.booster.model_copy(update={"mode": mode})}).run_id()


def _token_grid(backbone):
    vit = backbone.vit
    prefix = vit.num_prefix_tokens
    h, w = vit.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, prefix:].reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)

    return reshape


def gradcam_figure(run: str, results_dir: Path, data_dir: Path, n_images: int, out_dir: Path) -> list[Path]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = find_run(Path(results_dir), run)
    partner = partner_run_id(first)
    try:
        find_run(Path(results_dir), partner)
    except MedboostError:
        raise ResultsError(f"the paired run {partner} of {first['run_id']} is not in {results_dir}; train it first "
                            f"(same command with --booster {'rllm' if first['booster'] == 'none' else 'none'})") from None
    ids = (first["run_id"], partner) if first["booster"] == "none" else (partner, first["run_id"])
    loaded = [load_run(i, results_dir) for i in ids]
    recipe = loaded[0][1]
    if recipe.task_info.dims != 2 or not hasattr(loaded[0][2].model.backbone, "vit"):
        raise ConfigError(f"Grad-CAM maps are drawn for 2D ViT runs; {ids[0]} is {recipe.task_info.dims}D")
    task = recipe.task_info
    data = load_dataset(task, recipe.data.size, Path(data_dir), verify=recipe.data.verify)
    test = data.splits["test"]
    n = min(n_images, len(test))
    images, labels = test.images[:n], test.labels[:n, 0]
    maps, probs = [], []
    for row, rec, built in loaded:
        model = built.model.float() if next(built.model.parameters()).dtype != torch.float32 else built.model
        _, eval_tf = make_transforms(rec, model.backbone)
        x = eval_tf(images.to(next(model.parameters()).device))
        cam = GradCAM(model=model, target_layers=[model.backbone.vit.norm], reshape_transform=_token_grid(model.backbone))
        targets = [ClassifierOutputTarget(int(c)) for c in labels]
        maps.append(cam(input_tensor=x, targets=targets))
        with torch.no_grad():
            probs.append(model(x).float().softmax(-1)[torch.arange(n), labels].cpu().numpy())
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        img = images[i].float().mean(0).numpy() / 255.0
        size = maps[0].shape[-1]
        img = torch.nn.functional.interpolate(torch.tensor(img)[None, None], size=(size, size), mode="bilinear")[0, 0].numpy()
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 0].set_title(f"test #{i}, class {int(labels[i])}", fontsize=8)
        for j, name in ((1, "baseline"), (2, f"+ {loaded[1][0]['booster']}")):
            axes[i, j].imshow(img, cmap="gray")
            axes[i, j].imshow(maps[j - 1][i], cmap="jet", alpha=0.45)
            axes[i, j].set_title(f"{name}: p(true) {probs[j - 1][i]:.2f}", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle(f"Grad-CAM, {task.flag}: {ids[0]} vs {ids[1]}", fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"gradcam-{ids[1]}.{ext}"
        fig.savefig(path, dpi=130)
        paths.append(path)
    plt.close(fig)
    return paths
