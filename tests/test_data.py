"""Loading, validation errors, download behaviour and batched on-device transforms."""

from __future__ import annotations

import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import medboost_cli.download as download_mod
from medboost_cli.data import BatchTransform, data_dir_from, download, load_dataset
from medboost_cli.seeding import EpochStream, epoch_generator
from medboost_cli.errors import MedboostError
from medboost_cli.tasks import resolve_task

from .conftest import shared_file, write_medmnist

BREAST = resolve_task("breast")


def test_loads_all_splits_as_uint8_tensors(data_dir):
    ds = load_dataset(BREAST, 28, data_dir, verify=False)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [48, 16, 24]
    train = ds.splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape == (48, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (48, 1)
    assert ds.channels == 1 and not ds.verified


def test_rgb_and_3d_layouts(tmp_path):
    write_medmnist(tmp_path, "derma")
    write_medmnist(tmp_path, "adrenal3d")
    assert load_dataset(resolve_task("derma"), 28, tmp_path, verify=False).splits["val"].images.shape == (16, 3, 28, 28)
    vol = load_dataset(resolve_task("adrenal3d"), 28, tmp_path, verify=False).splits["test"].images
    assert vol.shape == (24, 1, 28, 28, 28)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(MedboostError, match=r"data file not found: .*breastmnist.npz; run `medboost download breast"):
        load_dataset(BREAST, 28, tmp_path)


def test_md5_mismatch_is_an_error_naming_the_file(data_dir):
    with pytest.raises(MedboostError, match=r"breastmnist.npz: MD5 [0-9a-f]{32} does not match medmnist's 750601b1"):
        load_dataset(BREAST, 28, data_dir, verify=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_or_truncated_file(data_dir, damage):
    path = data_dir / "breastmnist.npz"
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    else:  # damage compressed bytes in the middle: zlib or CRC error on read
        mid = len(raw) // 2
        path.write_bytes(raw[:mid] + bytes(b ^ 0xFF for b in raw[mid : mid + 64]) + raw[mid + 64 :])
    with pytest.raises(MedboostError, match=r"breastmnist.npz: cannot be read as a .npz file .* corrupt or truncated"):
        load_dataset(BREAST, 28, data_dir, verify=False)


def test_missing_arrays_and_bad_labels(tmp_path):
    np.savez(tmp_path / "breastmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(MedboostError, match="not a MedMNIST file, missing arrays train_labels"):
        load_dataset(BREAST, 28, tmp_path, verify=False)
    write_medmnist(tmp_path, "breast")
    with np.load(tmp_path / "breastmnist.npz") as z:
        arrays = dict(z)
    arrays["val_labels"][0] = 7
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(MedboostError, match=r"val_labels has values in \[0, 7\]; breastmnist allows 0..1"):
        load_dataset(BREAST, 28, tmp_path, verify=False)


def test_wrong_image_size(tmp_path):
    write_medmnist(tmp_path, "breast", size=28)
    (tmp_path / "breastmnist.npz").rename(tmp_path / "breastmnist_64.npz")
    with pytest.raises(MedboostError, match=r"train_images has shape \(48, 28, 28\) .* expected uint8 \(N, 64, 64"):
        load_dataset(BREAST, 64, tmp_path, verify=False)


def test_real_breastmnist_verifies():
    shared_file("breastmnist.npz")
    ds = load_dataset(BREAST, 28, shared_file("breastmnist.npz").parent, verify=True)
    assert ds.verified and [len(ds.splits[s]) for s in ("train", "val", "test")] == [546, 78, 156]


def test_split_sizes_are_checked_against_info(tmp_path, monkeypatch):
    path = write_medmnist(tmp_path, "breast")
    monkeypatch.setattr(type(BREAST), "md5", lambda self, size: hashlib.md5(path.read_bytes()).hexdigest())
    with pytest.raises(MedboostError, match=r"split 'train' has 48 images but medmnist's INFO for breastmnist says 546"):
        load_dataset(BREAST, 28, tmp_path, verify=True)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBOOST_DATA", str(tmp_path / "env"))
    assert data_dir_from(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir_from(None) == tmp_path / "env"
    monkeypatch.delenv("MEDBOOST_DATA")
    assert data_dir_from(None) == Path("~/.medmnist").expanduser()


# ------------------------------------------------------------------------------------------------ download


def test_download_offline_names_file_url_and_destination(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(download_mod.urllib.request, "urlopen", offline)
    with pytest.raises(MedboostError) as e:
        download(BREAST, 28, tmp_path, log=lambda *a: None)
    msg = str(e.value)
    assert "breastmnist.npz" in msg and "https://zenodo.org/records/10519652/files/breastmnist.npz" in msg
    assert f"put it at {tmp_path / 'breastmnist.npz'}" in msg
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


class _Response(io.BytesIO):
    status, headers = 200, {}  # a whole file, no length given

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_md5_and_replaces_a_bad_file(tmp_path, monkeypatch):
    payload = b"pretend npz bytes"
    monkeypatch.setattr(type(BREAST), "md5", lambda self, size: hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", lambda url, timeout: _Response(payload))
    (tmp_path / "breastmnist.npz").write_bytes(b"stale")
    logs = []
    path = download(BREAST, 28, tmp_path, log=logs.append)
    assert path.read_bytes() == payload and "downloading it again" in logs[0]
    download(BREAST, 28, tmp_path, log=logs.append)  # present and correct: kept
    assert "present, MD5 ok" in logs[-1]


def test_download_rejects_wrong_md5(tmp_path, monkeypatch):
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", lambda url, timeout: _Response(b"tampered"))
    with pytest.raises(MedboostError, match="its MD5 .* is not medmnist's"):
        download(BREAST, 28, tmp_path, log=lambda *a: None)
    assert not (tmp_path / "breastmnist.npz").exists()


def test_download_existing_real_file_checks_md5():
    real = shared_file("breastmnist.npz")
    logs = []
    download(BREAST, 28, real.parent, log=logs.append)
    assert logs == [f"{real}: present, MD5 ok"]


# ---------------------------------------------------------------------------------------------- transforms


def _tf(**kw):
    return BatchTransform(out_size=56, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, **kw)


def test_eval_transform_resizes_repeats_channels_and_normalises():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    out = _tf()(x)
    assert out.shape == (4, 3, 56, 56) and out.dtype == torch.float32
    expected = (F.interpolate(x.float() / 255, size=(56, 56), mode="bilinear") - 0.5) / 0.25
    assert torch.allclose(out[:, 1:2], expected, atol=1e-5)


def test_identity_affine_equals_plain_resize():
    """The augmentation path samples on the same grid as the eval path when it draws the identity."""
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    tf = _tf(scale=(0.9999, 1.0))  # augments, but draws (almost) the identity map
    assert torch.allclose(tf(x, torch.Generator().manual_seed(0)), _tf()(x), atol=1e-2)


def test_flip_is_a_flip():
    x = torch.randint(0, 256, (3, 1, 56, 56), dtype=torch.uint8)
    flipped = _tf(hflip=1.0)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(flipped, _tf()(x).flip(-1), atol=1e-4)
    vol = torch.randint(0, 256, (2, 1, 8, 8, 8), dtype=torch.uint8)
    tf3 = BatchTransform(out_size=8, in_chans=1, mean=(0.0,), std=(1.0,), dflip=1.0)
    assert torch.allclose(tf3(vol, torch.Generator()), vol.float().div(255).flip(2), atol=1e-5)


def test_augmentation_is_per_sample_and_reproducible():
    x = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8).repeat(8, 1, 1, 1)
    tf = _tf(hflip=0.5, scale=(0.7, 1.0), translate=0.1, rotate=20)
    a = tf(x, epoch_generator(3, 1, EpochStream.AUGMENT))
    b = tf(x, epoch_generator(3, 1, EpochStream.AUGMENT))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # each sample gets its own transform
    assert not torch.equal(a, tf(x, epoch_generator(3, 2, EpochStream.AUGMENT)))


def test_3d_volumes_resize_with_trilinear():
    vol = torch.randint(0, 256, (2, 1, 28, 28, 28), dtype=torch.uint8)
    out = BatchTransform(out_size=32, in_chans=3, mean=(0,) * 3, std=(1,) * 3, translate=0.1)(vol, torch.Generator())
    assert out.shape == (2, 3, 32, 32, 32)
