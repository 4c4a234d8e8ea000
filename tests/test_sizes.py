"""MedMNIST+ sizes and ``data.resize``: the sizes medmnist publishes per task and the files they name, ``--size``,
``pad`` as MedMNIST+'s code pads (centred, zeros after normalisation) in 2D and 3D, ``upsample`` as the transform
always resampled, the run ids it keeps, the row's columns, and real runs on the size-64 files in ../shared."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from medboost_cli import compat
from medboost_cli.engine import evaluate_run
from medboost_cli.errors import ConfigError, MedboostError
from medboost_cli.recipes import load_recipe
from medboost_cli.resizing import DEFAULT_RESIZE, RESIZES, resize_mode
from medboost_cli.tasks import resolve_task
from medboost_cli.transforms import BatchTransform

from .conftest import TINY_SETS, shared_file, write_medmnist
from .test_cli import assert_one_line_error, run

PAD, UPSAMPLE = RESIZES["pad"], RESIZES["upsample"]


# ------------------------------------------------------------------------------------------------ sizes


def test_each_task_takes_the_sizes_medmnist_publishes_and_names_their_files():
    from medmnist import INFO

    breast, adrenal = resolve_task("breast"), resolve_task("adrenal3d")
    assert breast.sizes == (28, 64, 128, 224) and adrenal.sizes == (28, 64)
    assert (breast.filename(28), breast.filename(64), breast.filename(224)) == \
        ("breastmnist.npz", "breastmnist_64.npz", "breastmnist_224.npz")
    assert (breast.url(128), breast.md5(128)) == (INFO["breastmnist"]["url_128"], INFO["breastmnist"]["MD5_128"])
    assert (adrenal.filename(64), adrenal.md5(64)) == ("adrenalmnist3d_64.npz", INFO["adrenalmnist3d"]["MD5_64"])
    with pytest.raises(ConfigError, match="size 128 is not available for adrenalmnist3d: MedMNIST publishes it at "
                                          "28, 64 only"):
        adrenal.filename(128)


def test_size_flag_and_key_choose_the_file():
    assert load_recipe("breast", flags=[("--size", "data.size", 64)]).data.size == 64
    assert load_recipe("breast", preset="cpu", flags=[("--size", "data.size", 128)]).data.size == 128  # over the preset
    assert load_recipe("adrenal3d", sets=["data.size=64"]).data.size == 64


@pytest.mark.parametrize("args, fragments", [
    (["train", "breast", "--size", "100"], ["--size 100: size 100 is not available for breastmnist",
                                            "28, 64, 128, 224"]),
    (["train", "adrenal3d", "--size", "128"], ["--size 128", "adrenalmnist3d", "28, 64 only"]),
    (["download", "adrenal3d", "--size", "224"], ["size 224 is not available for adrenalmnist3d", "28, 64 only"]),
    (["train", "breast", "--set", "data.size=32"], ["--set data.size=32", "size 32 is not available"]),
    (["train", "breast", "--set", "data.resize=crop"], ["--set data.resize=crop", "'upsample' or 'pad'"]),
])
def test_a_bad_size_or_resize_is_one_line(tmp_path, args, fragments):
    assert_one_line_error(run(*args, "--data-dir", tmp_path), *fragments, code=2)


def test_the_registry_refuses_an_unknown_mode_in_one_line():
    assert resize_mode("pad") is PAD and DEFAULT_RESIZE == "upsample"
    with pytest.raises(ConfigError, match="data.resize='crop' is not a resize mode; choose one of upsample, pad"):
        resize_mode("crop")


def test_pad_refuses_images_larger_than_the_input_before_training(tmp_path):
    write_medmnist(tmp_path / "d", "breast", size=64)
    r = run("train", "breast", "--preset", "cpu", "--size", "64", "--booster", "none", "--set", "data.resize=pad",
            *(f"--set={s}" for s in TINY_SETS), "--data-dir", tmp_path / "d", "--results-dir", tmp_path / "r")
    assert_one_line_error(r, "data.resize=pad: images of side 64 are larger than the backbone's input (28)",
                          "backbone.img_size", code=2)
    assert not list((tmp_path / "r").rglob("*.parquet"))


def test_download_names_the_size_file(tmp_path):
    """``download --size 64`` looks for medmnist's ``{flag}_64.npz`` and checks it against INFO's MD5 for 64: the
    real files in ../shared pass without a network."""
    breast = shared_file("breastmnist_64.npz")
    shared_file("adrenalmnist3d_64.npz")
    r = run("download", "breast", "adrenal3d", "--size", "64", "--data-dir", breast.parent)
    assert r.returncode == 0, r.stderr
    assert f"{breast}: present, MD5 ok" in r.stdout
    assert f"{breast.parent / 'adrenalmnist3d_64.npz'}: present, MD5 ok" in r.stdout


# ------------------------------------------------------------------------------------------------ the transform


def _medmnist_plus(image: np.ndarray, mean, std, out: int) -> torch.Tensor:
    """MedMNIST+'s train.py transform of one image: ToTensor, Normalize, then Pad centred with fill 0."""
    from torchvision import transforms

    total = max(0, out - image.shape[0])
    left = top = total // 2
    pad = transforms.Pad((left, top, total - left, total - top), fill=0, padding_mode="constant")
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std), pad])(image)


@pytest.mark.parametrize("side, out, chans", [(28, 224, 3), (64, 224, 1), (5, 12, 3), (6, 9, 1)])
def test_pad_is_medmnist_plus_transform(side, out, chans):
    """The image in the centre (the odd pixel after it), zeros around in normalised space: torchvision's Pad
    after Normalize, for each image of a batch."""
    rng = np.random.default_rng(side)
    images = rng.integers(0, 256, size=(3, side, side, chans), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406)[:chans], (0.229, 0.224, 0.225)[:chans]
    tf = BatchTransform(out_size=out, in_chans=chans, mean=mean, std=std, resize=PAD)
    got = tf(torch.from_numpy(images).movedim(-1, 1))
    assert got.shape == (3, chans, out, out)
    for i, image in enumerate(images):
        torch.testing.assert_close(got[i], _medmnist_plus(image if chans == 3 else image[..., 0], mean, std, out))
    before = (out - side) // 2
    inside = torch.zeros(out, out, dtype=torch.bool)
    inside[before : before + side, before : before + side] = True
    assert (got[..., ~inside] == 0).all() and (got[..., inside] != 0).any()


def test_pad_centres_a_volume_with_zeros_around():
    vol = torch.randint(1, 256, (2, 1, 5, 5, 5), dtype=torch.uint8)
    tf = BatchTransform(out_size=8, in_chans=3, mean=(0.1,) * 3, std=(0.5,) * 3, resize=PAD)
    got = tf(vol)
    assert got.shape == (2, 3, 8, 8, 8)
    centre = got[:, :, 1:6, 1:6, 1:6]  # (8 - 5) // 2 = 1 before on every axis, 2 after
    torch.testing.assert_close(centre, ((vol.float() / 255 - 0.1) / 0.5).expand(-1, 3, -1, -1, -1))
    rim = torch.ones(8, 8, 8, dtype=torch.bool)
    rim[1:6, 1:6, 1:6] = False
    assert (got[..., rim] == 0).all()


def test_pad_augments_the_image_at_its_own_size_then_pads():
    """The affine map moves the image within its own frame (a flip here), and the canvas around stays zero."""
    img = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    flip = BatchTransform(out_size=10, in_chans=1, mean=(0.5,), std=(0.25,), hflip=1.0, resize=PAD)
    plain = BatchTransform(out_size=10, in_chans=1, mean=(0.5,), std=(0.25,), resize=PAD)
    got = flip(img, torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, plain(img.flip(-1)))
    assert (got[..., :2, :] == 0).all() and (got[..., 8:, :] == 0).all() and (got[..., :, :2] == 0).all()


def _resampled_before(x: torch.Tensor, tf: BatchTransform, theta: torch.Tensor | None) -> torch.Tensor:
    """The transform's resampling and normalisation written out at the input side, without a resize mode: what
    ``upsample`` must give bit for bit."""
    spatial = x.ndim - 2
    x = x.float().div_(255.0)
    if theta is not None:
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1]] + [tf.out_size] * spatial, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=tf.padding, align_corners=False)
    elif x.shape[2:] != (tf.out_size,) * spatial:
        x = F.interpolate(x, size=(tf.out_size,) * spatial, mode="bilinear" if spatial == 2 else "trilinear")
    x = x.expand(-1, tf.in_chans, *x.shape[2:])
    shape = (1, -1) + (1,) * spatial
    return (x - torch.tensor(tf.mean).view(shape)) / torch.tensor(tf.std).view(shape)


@pytest.mark.parametrize("shape, out", [((5, 1, 28, 28), 56), ((3, 1, 64, 64), 28), ((2, 1, 6, 6, 6), 9),
                                        ((4, 1, 28, 28), 28)])
def test_upsample_is_the_default_and_resamples_to_the_input_bit_for_bit(shape, out):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    spatial = len(shape) - 2
    kw = dict(out_size=out, in_chans=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    aug = dict(hflip=0.5, scale=(0.7, 1.0), translate=0.1, **({"rotate": 10.0} if spatial == 2 else {}))
    assert BatchTransform(**kw).resize is UPSAMPLE
    for tf in (BatchTransform(**kw), BatchTransform(**kw, **aug)):
        theta = tf.maps(shape[0], spatial, torch.Generator().manual_seed(1))
        assert torch.equal(tf(x, theta=theta), _resampled_before(x, tf, theta))
        assert tf(x, theta=theta).shape == (shape[0], 3) + (out,) * spatial


# ------------------------------------------------------------------------------------------------ run ids and rows


@pytest.mark.parametrize("task, preset, flags, run_id", [
    ("breast", "cpu", [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], "breast-vit-mini-rllm-2c327aa2-s3"),
    ("breast", None, [("--booster", "booster.mode", "rllm"), ("--seed", "seed", 3)], "breast-vit-s-rllm-dbe89644-s3"),
    ("adrenal3d", "cpu", [("--backbone", "backbone.name", "vivit-s")], "adrenal3d-vivit-s-rllm-818dbd51-s0"),
])
def test_upsample_keeps_every_run_id_and_pad_makes_another(task, preset, flags, run_id):
    """Run ids pinned in test_compat: ``data.resize=upsample`` said or not, the same id; ``pad`` another."""
    assert load_recipe(task, preset=preset, flags=flags).run_id() == run_id
    assert load_recipe(task, preset=preset, flags=flags, sets=["data.resize=upsample"]).run_id() == run_id
    padded = load_recipe(task, preset=preset, flags=flags, sets=["data.resize=pad"])
    assert padded.run_id() != run_id and padded.data.resize == "pad"


def test_pinned_ids_of_native_sizes():
    """The first configurations at MedMNIST+ sizes: a change that moves these orphans their results."""
    rllm = [("--booster", "booster.mode", "rllm")]
    assert load_recipe("breast", flags=rllm + [("--size", "data.size", 64)]).run_id() == \
        "breast-vit-s-rllm-26ce9104-s0"
    assert load_recipe("breast", flags=rllm + [("--size", "data.size", 64)], sets=["data.resize=pad"]).run_id() == \
        "breast-vit-s-rllm-46e126c1-s0"


def test_rows_before_the_key_read_as_upsample():
    table = pa.Table.from_pylist([{"run_id": "a", "schema_version": 3, "resize": None},
                                  {"run_id": "b", "schema_version": 3, "resize": "pad"}])
    assert compat.upgrade_table(table, ["run_id", "resize"]).to_pylist() == [
        {"run_id": "a", "resize": "upsample"}, {"run_id": "b", "resize": "pad"}]


# ------------------------------------------------------------------------------------------------ real files


@pytest.mark.slow
def test_breastmnist_64_trains_padded_into_a_larger_input(tmp_path):
    """`medboost train breast --size 64` on the real size-64 file, padded into a 96x96 input, then scored again."""
    data = shared_file("breastmnist_64.npz").parent
    sets = ["data.resize=pad", "backbone.img_size=96", "backbone.patch_size=8", "backbone.dim=32",
            "backbone.depth=1", "backbone.heads=2", "train.epochs=1", "train.warmup_epochs=0"]
    r = run("train", "breast", "--size", "64", "--preset", "cpu", "--booster", "none", "--quiet", "--json",
            *(f"--set={s}" for s in sets), "--data-dir", data, "--results-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert (row["status"], row["size"], row["resize"], row["flag"]) == ("completed", 64, "pad", "breastmnist")
    assert json.loads(row["config_json"])["data"]["verify"] and row["epochs_done"] == 1
    scored = evaluate_run(row["run_id"], tmp_path, data, "test")
    assert scored["auc"] == pytest.approx(row["test_auc"])


@pytest.mark.slow
def test_adrenalmnist3d_64_trains_padded(tmp_path):
    data = shared_file("adrenalmnist3d_64.npz").parent
    recipe = load_recipe("adrenal3d", preset="cpu", flags=[("--size", "data.size", 64), ("--booster", "booster.mode", "none")],
                         sets=["data.resize=pad", "backbone.img_size=80", "backbone.patch_size=16",
                               "backbone.dim=32", "backbone.depth=1", "backbone.heads=2", "backbone.dim_head=16",
                               "data.translate=0", "train.epochs=1", "train.warmup_epochs=0"])
    from medboost_cli.engine import train

    row = train(recipe, data, tmp_path, log=lambda *a: None)
    assert (row["status"], row["size"], row["resize"]) == ("completed", 64, "pad")
    assert len(row["test_scores"]) == 298


def test_an_unknown_value_in_a_saved_row_is_refused():
    from medboost_cli.recipes import saved_recipe

    config = json.loads(load_recipe("breast").model_dump_json())
    config["data"]["resize"] = "stretch"
    with pytest.raises(MedboostError, match="data.resize"):
        saved_recipe(json.dumps(config))
