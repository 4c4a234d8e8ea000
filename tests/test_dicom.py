"""`medboost prepare dicom`: windowing and MONOCHROME1 on a real CR, a synthetic cohort end to end, bad input."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from medboost_cli import cohort_file, dicom
from medboost_cli.errors import ConfigError, DataError

from .dicom_fixtures import ROWS, write_cohort, write_dicom, write_labels
from .test_cli import assert_one_line_error, run


def real_cr():
    """pydicom-data's RG1_UNCR.dcm: a real chest CR, MONOCHROME1, 15 bits stored, window 15000/30000."""
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file("RG1_UNCR.dcm")
    except Exception:  # without pydicom-data, pydicom tries to download it, and the tests are offline
        path = None
    if path is None:
        pytest.skip("RG1_UNCR.dcm needs the pydicom-data package (pip install 'medboost[test]')")
    return path


def expected_rg1(raw: np.ndarray) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) by hand for window 15000/30000 onto [0, 1], then inverted (MONOCHROME1)."""
    center, width = 15000 - 0.5, 30000 - 1
    return 1 - np.clip((raw.astype(np.float64) - center) / width + 0.5, 0, 1)


def test_real_cr_window_and_inversion_follow_the_formula():
    ds = dicom.read_dataset(real_cr())
    assert (ds.PhotometricInterpretation, ds.BitsStored, ds.WindowCenter, ds.WindowWidth) == \
        ("MONOCHROME1", 15, 15000, 30000)
    raw = ds.pixel_array
    x, source = dicom.display_image(ds)
    assert source == "window" and x.dtype == np.float32 and x.shape == (1955, 1841)
    np.testing.assert_allclose(x, expected_rg1(raw), atol=1e-6)


def box_mean(image: np.ndarray, fy: float, fx: float, half: float = 0.03) -> float:
    h, w = image.shape
    return float(image[int((fy - half) * h):int((fy + half) * h), int((fx - half) * w):int((fx + half) * w)].mean())


def test_real_cr_end_to_end_air_is_dark(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    shutil.copy(real_cr(), folder / "rg1.dcm")
    write_labels(tmp_path / "labels.csv", [("rg1.dcm", "anon1", 1)])
    result = run("prepare", "dicom", folder, "--labels", tmp_path / "labels.csv", "--size", 64,
                 "--out", tmp_path / "cr.npz")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "cr.npz") as z:
        image = z["images"][0]
    # Lungs (air) dark, spine bright, the unexposed corner dark; raw MONOCHROME1 values run the other way.
    lungs = (box_mean(image, 0.4, 0.25) + box_mean(image, 0.4, 0.72)) / 2
    spine, corner = box_mean(image, 0.4, 0.5), box_mean(image, 0.03, 0.03, half=0.03)
    assert lungs < 0.7 * spine and corner < 0.4 * 255, (lungs, spine, corner)
    raw = dicom.read_dataset(real_cr()).pixel_array
    assert box_mean(raw, 0.4, 0.25) > box_mean(raw, 0.4, 0.5)
    # The whole pipeline is the formula, then the resize.
    expected = dicom.resize_square(expected_rg1(raw).astype(np.float32), 64)
    assert np.abs(image.astype(int) - expected).max() <= 1


def prepare(cohort, out, *extra):
    return run("prepare", "dicom", cohort.folder, "--labels", cohort.labels_csv, "--size", 32, "--out", out, *extra)


def test_synthetic_cohort_end_to_end(tmp_path):
    cohort = write_cohort(tmp_path)
    out = tmp_path / "cohort.npz"
    result = prepare(cohort, out)
    assert result.returncode == 0, result.stderr

    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(cohort.bad) == 3, result.stderr
    for file, reason in cohort.bad.items():
        assert sum(line.startswith(f"skipped {file}: {reason}") for line in skipped) == 1, (file, skipped)

    n, patients = len(cohort.good), len({p for f, p, _ in cohort.rows if f in cohort.good})
    labels = [cohort.label_of(f) for f in cohort.good]
    assert f"{out}: {n} images of {patients} patients (label 0: {labels.count(0)}, label 1: {labels.count(1)})" \
        in result.stdout
    assert f"skipped 3 of {len(cohort.rows)} listed files (1 not a DICOM file; 1 no pixel data; 1 cannot decode " \
           f"pixel data)" in result.stdout
    assert "1 files had no VOI LUT or window tags" in result.stdout
    assert "1 files in the folder are not in labels.csv" in result.stdout

    written = cohort_file.load_cohort(out)
    assert written.images.dtype == np.uint8 and written.images.shape == (n, 32, 32)
    assert written.files.tolist() == cohort.good
    assert written.labels[:, 0].tolist() == labels and written.labels.shape == (n, 1)
    assert written.patient_ids.tolist() == [f.split("/")[0] for f in cohort.good]
    assert (written.crop_boxes == [0, ROWS, 0, cohort.display[cohort.good[0]].shape[1]]).all()
    assert written.meta["size"] == 32 and written.meta["aspect"] == "stretch"
    assert [f for f, _ in written.meta["skipped"]] == list(cohort.bad)
    assert written.meta["minmax"] == cohort.minmax
    # Every file - MONOCHROME1 or 2, window, rescale + window, VOI LUT, no VOI tags - looks as drawn, air dark.
    for image, file in zip(written.images, cohort.good):
        assert np.abs(image.astype(int) - dicom.resize_square(cohort.display[file], 32)).max() <= 1, file
        assert image[:3, :3].mean() < 0.1 * 255, file


def test_masks_crop_to_the_lungs_with_a_margin(tmp_path):
    cohort = write_cohort(tmp_path, masks=True, bad_files=False)
    for margin in (0.0, 0.1):
        out = tmp_path / f"crop{margin}.npz"
        result = prepare(cohort, out, "--masks", cohort.masks, "--margin", margin)
        assert result.returncode == 0, result.stderr
        got = cohort_file.load_cohort(out)
        assert got.meta["margin"] == margin
        for image, box, file in zip(got.images, got.crop_boxes, cohort.good):
            top, bottom, left, right = cohort.lung_box[file]
            dy, dx = margin * (bottom - top), margin * (right - left)
            expected = (int(np.floor(top - dy)), int(np.ceil(bottom + dy)), int(np.floor(left - dx)),
                        int(np.ceil(right + dx)))
            assert tuple(box) == expected, file
            crop = cohort.display[file][box[0]:box[1], box[2]:box[3]]
            assert np.abs(image.astype(int) - dicom.resize_square(crop, 32)).max() <= 1, file


def test_a_missing_mask_skips_that_file(tmp_path):
    cohort = write_cohort(tmp_path, n_patients=2, masks=True, bad_files=False)
    missing = cohort.masks / "P001" / "img0.png"
    missing.unlink()
    result = prepare(cohort, tmp_path / "out.npz", "--masks", cohort.masks)
    assert result.returncode == 0, result.stderr
    assert "skipped P001/img0.dcm: no mask (P001/img0.png or .npy in" in result.stderr
    assert "P001/img0.dcm" not in cohort_file.load_cohort(tmp_path / "out.npz").files.tolist()


def test_mask_box_margin_clip_and_scale():
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:6, 5:15] = True
    assert dicom.mask_box(mask, (10, 20), 0.0) == (2, 6, 5, 15)
    assert dicom.mask_box(mask, (10, 20), 0.25) == (1, 7, 2, 18)
    assert dicom.mask_box(mask, (10, 20), 1.0) == (0, 10, 0, 20)  # clipped to the image
    assert dicom.mask_box(mask, (40, 40), 0.0) == (8, 24, 10, 30)  # a mask at a quarter/half resolution
    with pytest.raises(dicom.SkipFile, match="empty"):
        dicom.mask_box(np.zeros((4, 4), dtype=bool), (4, 4), 0.0)


def test_pad_keeps_the_aspect_stretch_fills_the_square():
    tall = np.ones((40, 20), dtype=np.float32)
    padded, stretched = dicom.resize_square(tall, 16, "pad"), dicom.resize_square(tall, 16, "stretch")
    assert (stretched == 255).all()
    assert (padded[:, 6:10] == 255).all() and (padded[:, :3] == 0).all() and (padded[:, -3:] == 0).all()


@pytest.mark.parametrize("rows, header, fragments", [
    ([("P000/img0.dcm", "P000", 0)], "file,patient,label", ["missing column(s) patient_id"]),
    ([("P000/nope.dcm", "P000", 0)], None, ["line 2", "file P000/nope.dcm not found in"]),
    ([("P000/img0.dcm", "P000", 0), ("P001/img0.dcm", "P001", "yes")], None, ["line 3", "label 'yes' is not an integer"]),
    ([("P000/img0.dcm", "P000", -1)], None, ["label -1 is negative"]),
    ([("P000/img0.dcm", "P000", 0), ("P000/img0.dcm", "P000", 0)], None, ["line 3", "listed twice"]),
    ([("P000/img0.dcm", "", 0)], None, ["empty patient_id"]),
    ([], None, ["no rows"]),
])
def test_bad_labels_csv_is_one_data_error(tmp_path, rows, header, fragments):
    cohort = write_cohort(tmp_path, n_patients=2, bad_files=False)
    write_labels(cohort.labels_csv, rows, **({"header": header} if header else {}))
    result = prepare(cohort, tmp_path / "out.npz")
    assert_one_line_error(result, str(cohort.labels_csv), *fragments, code=DataError.exit_code)
    assert not (tmp_path / "out.npz").exists()


def test_no_usable_file_is_a_data_error(tmp_path):
    folder = tmp_path / "dicom"
    write_dicom(folder / "a.dcm", None)
    (folder / "b.dcm").write_bytes(b"\x00" * 10)
    write_labels(tmp_path / "labels.csv", [("a.dcm", "p", 0), ("b.dcm", "q", 1)])
    result = run("prepare", "dicom", folder, "--labels", tmp_path / "labels.csv", "--out", tmp_path / "o.npz")
    assert result.returncode == DataError.exit_code
    assert "skipped a.dcm: no pixel data" in result.stderr and "skipped b.dcm: not a DICOM file" in result.stderr
    assert "data error: none of the 2 files listed" in result.stderr and not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("args, fragment", [(["--size", "4"], "--size 4"), (["--aspect", "crop"], "--aspect crop"),
                                            (["--masks", "nowhere"], "mask folder not found")])
def test_bad_options_are_one_line_errors(tmp_path, args, fragment):
    cohort = write_cohort(tmp_path, n_patients=2, bad_files=False)
    assert_one_line_error(prepare(cohort, tmp_path / "o.npz", *args), fragment)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    cohort = write_cohort(tmp_path, n_patients=2, bad_files=False)
    out = tmp_path / "out" / "cohort.npz"
    out.parent.mkdir()
    out.write_bytes(b"the previous cohort")

    def disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dicom.np, "savez_compressed", disk_full)
    assert_one_line_error(prepare(cohort, out), f"cannot write {out}: No space left", code=DataError.exit_code)
    assert out.read_bytes() == b"the previous cohort"
    assert [p.name for p in out.parent.iterdir()] == ["cohort.npz"]


def test_missing_pydicom_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'medboost\[dicom\]'"):
        dicom.read_dataset("any.dcm")


def test_load_cohort_rejects_other_files(tmp_path):
    from .conftest import write_medmnist

    medmnist_file = write_medmnist(tmp_path, "breast")
    with pytest.raises(DataError, match="missing arrays images, labels, patient_ids"):
        cohort_file.load_cohort(medmnist_file)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="cannot be read as a cohort file"):
        cohort_file.load_cohort(tmp_path / "broken.npz")
    arrays = {k: np.zeros(1) for k in cohort_file.COHORT_KEYS}
    arrays["meta"] = np.array(json.dumps({"format": "something-else"}))
    np.savez(tmp_path / "foreign.npz", **arrays)
    with pytest.raises(DataError, match="not written by medboost"):
        cohort_file.load_cohort(tmp_path / "foreign.npz")


def test_colour_multiframe_and_flat_images_are_skipped(tmp_path):
    import pydicom

    raw = np.full((8, 8), 100, dtype=np.uint16)
    colour = write_dicom(tmp_path / "rgb.dcm", raw, photometric="RGB")
    frames = write_dicom(tmp_path / "frames.dcm", raw)
    ds = pydicom.dcmread(frames)
    ds.NumberOfFrames = 2
    ds.save_as(frames)
    flat = write_dicom(tmp_path / "flat.dcm", raw, window=None)
    for path, reason in ((colour, "not MONOCHROME1/2 (PhotometricInterpretation 'RGB'"),
                         (frames, "multi-frame (2 frames"), (flat, "every pixel has the same value")):
        with pytest.raises(dicom.SkipFile) as caught:
            dicom.display_image(dicom.read_dataset(path))
        assert str(caught.value).startswith(reason), caught.value
    x, source = dicom.display_image(dicom.read_dataset(write_dicom(tmp_path / "w.dcm", raw)))
    assert source == "window" and np.allclose(x, (100 - 2047.5) / 4095 + 0.5)  # a window keeps a flat image


def test_an_image_too_large_for_the_memory_stops_before_its_pixels_are_decoded(tmp_path, monkeypatch):
    """16,000 x 16,000 declared (within the side limit), 4 GiB available: refused without decoding the file."""
    from collections import namedtuple

    import psutil
    import pydicom

    path = write_dicom(tmp_path / "dicom" / "a.dcm", np.zeros((64, 64), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 16_000
    ds.save_as(path)
    write_labels(tmp_path / "labels.csv", [("a.dcm", "p", 0)])
    memory = namedtuple("memory", "available total")(4 * 2**30, 8 * 2**30)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: pytest.fail("pixel data decoded")))
    result = run("prepare", "dicom", tmp_path / "dicom", "--labels", tmp_path / "labels.csv", "--out",
                 tmp_path / "o.npz")
    assert_one_line_error(result, "a.dcm: its 16000 x 16000 image needs 7.6 GiB to decode and window, more than "
                          "the 4.0 GiB of memory available", code=DataError.exit_code)
    assert not (tmp_path / "o.npz").exists()


def test_a_npy_mask_is_read_with_its_header_checked(tmp_path):
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:3, 2:4] = True
    np.save(tmp_path / "m.npy", mask)
    assert (dicom.read_mask(tmp_path / "m.npy") == mask).all()
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2), np.uint8))
    with pytest.raises(dicom.SkipFile, match="mask not 2D"):
        dicom.read_mask(tmp_path / "cube.npy")
    data = (tmp_path / "m.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-10])  # the header says 30 bytes; 20 follow it
    with pytest.raises(DataError, match=r"cut.npy claims shape \(6, 5\) of bool \(30 bytes\) but holds 20 bytes"):
        dicom.read_mask(tmp_path / "cut.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(dicom.SkipFile, match="unreadable mask"):
        dicom.read_mask(tmp_path / "junk.npy")
