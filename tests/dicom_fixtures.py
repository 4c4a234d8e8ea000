"""A synthetic chest-radiograph cohort written as real DICOM files with pydicom, for `medboost prepare dicom` tests.

Each image is drawn first as what a reader should see (``display``: float [0, 1], air dark, body grey, two darker
lungs; label 1 adds bright spots in the lungs, so a classifier can learn it), then stored the way scanners do:
MONOCHROME2 (raw = display) or MONOCHROME1 (raw = inverted display), 12 bits, with a window that maps the raw
range back to [0, 1], some with Rescale Slope/Intercept, one with a VOI LUT Sequence instead of a window, one
with no VOI tags at all. The tests compare `prepare dicom`'s output with ``display`` resized.

``write_cohort(root)`` is reused by the end-to-end test (prepare -> 2-fold train -> report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROWS, COLS = 72, 60  # not square, so stretch and pad differ
BITS = 12
MAX = 2**BITS - 1
WINDOW = ((MAX + 1) / 2, MAX + 1)  # centre, width: raw 0..MAX onto black..white


def chest_display(label: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """(display image float [0, 1] (ROWS, COLS), lung box (top, bottom, left, right) with exclusive ends, lung
    mask)."""
    y, x = np.mgrid[0:ROWS, 0:COLS]
    image = np.full((ROWS, COLS), 0.04)
    body = ((y - ROWS / 2) / (ROWS * 0.46)) ** 2 + ((x - COLS / 2) / (COLS * 0.44)) ** 2 < 1
    image[body] = 0.6
    lungs = np.zeros((ROWS, COLS), dtype=bool)
    top, bottom = int(ROWS * 0.2) + int(rng.integers(0, 4)), int(ROWS * 0.75) + int(rng.integers(0, 4))
    for cx in (COLS * 0.3, COLS * 0.7):
        lungs |= ((y - (top + bottom) / 2) / ((bottom - top) / 2)) ** 2 + ((x - cx) / (COLS * 0.14)) ** 2 < 1
    image[lungs] = 0.22
    if label:
        spots = lungs & (rng.random((ROWS, COLS)) < 0.25)
        image[spots] = 0.85
    image = np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1)
    rows, cols = np.flatnonzero(lungs.any(1)), np.flatnonzero(lungs.any(0))
    return image, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1), lungs


def write_dicom(path: Path, raw: np.ndarray | None, photometric: str = "MONOCHROME2", patient_id: str = "P0",
                window: tuple[float, float] | None = WINDOW, rescale: tuple[float, float] | None = None,
                voi_lut: np.ndarray | None = None, transfer_syntax: str | None = None,
                bits_stored: int = BITS) -> Path:
    """Write one single-frame grayscale DICOM (CR). ``raw`` None writes a dataset without pixel data;
    ``transfer_syntax`` other than Explicit VR Little Endian stores ``raw``'s bytes as one (garbage) fragment."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", patient_id
    if raw is not None:
        ds.Rows, ds.Columns = raw.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        if voi_lut is not None:
            item = Dataset()
            item.add_new("LUTDescriptor", "US", [len(voi_lut), 0, 8])  # VR US or SS, US or OW: say which
            item.add_new("LUTData", "US", [int(v) for v in voi_lut])
            ds.VOILUTSequence = [item]
        if transfer_syntax is None:
            ds.PixelData = raw.astype("<u2").tobytes()
        else:
            ds.PixelData = encapsulate([raw.astype("<u2").tobytes()[:64]])
            ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class SyntheticCohort:
    folder: Path
    labels_csv: Path
    masks: Path | None
    rows: list[tuple[str, str, int]]  # every row of labels.csv: (file, patient_id, label)
    good: list[str] = field(default_factory=list)  # files prepare keeps, in labels.csv order
    display: dict[str, np.ndarray] = field(default_factory=dict)  # what each good file should look like
    lung_box: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # file -> a fragment of its skip reason
    minmax: list[str] = field(default_factory=list)  # good files without VOI tags
    unlisted: list[str] = field(default_factory=list)  # files in the folder that labels.csv leaves out

    def label_of(self, file: str) -> int:
        return next(label for f, _, label in self.rows if f == file)


def write_cohort(root: Path, n_patients: int = 12, images_per_patient: tuple[int, int] = (1, 3), seed: int = 0,
                 masks: bool = False, bad_files: bool = True) -> SyntheticCohort:
    """``root/dicom`` (one folder per patient), ``root/labels.csv`` and with ``masks`` ``root/masks`` (PNG lung
    masks, one .npy). Labels alternate by patient; MONOCHROME1/2 alternate in pairs of patients so photometric
    and label are unrelated. With ``bad_files``: a text file, a DICOM without pixel data and a JPEG-LS DICOM no
    installed plugin decodes, all listed in labels.csv, and one DICOM that labels.csv does not list."""
    from PIL import Image
    from pydicom.uid import JPEGLSLossless

    rng = np.random.default_rng(seed)
    folder = root / "dicom"
    mask_folder = root / "masks" if masks else None
    cohort = SyntheticCohort(folder, root / "labels.csv", mask_folder, [])
    n_image = 0
    for p in range(n_patients):
        patient, label = f"P{p:03d}", p % 2
        photometric = "MONOCHROME1" if (p // 2) % 2 == 0 else "MONOCHROME2"
        for i in range(int(rng.integers(images_per_patient[0], images_per_patient[1] + 1))):
            file = f"{patient}/img{i}.dcm"
            display, box, lungs = chest_display(label, rng)
            raw = np.rint((1 - display if photometric == "MONOCHROME1" else display) * MAX).astype(np.uint16)
            kind = n_image % 5
            if n_image == 1:  # a VOI LUT Sequence (8-bit, linear) instead of a window
                lut = np.rint(np.arange(MAX + 1) * 255 / MAX)
                write_dicom(folder / file, raw, photometric, patient, window=None, voi_lut=lut)
            elif n_image == 2:  # no VOI tags: scaled from its darkest to its brightest pixel
                write_dicom(folder / file, raw, photometric, patient, window=None)
                display = (display - display.min()) / (display.max() - display.min())
                cohort.minmax.append(file)
            elif kind == 3:  # a rescale: values = raw - 1024, window shifted with them
                write_dicom(folder / file, raw, photometric, patient, window=(WINDOW[0] - 1024, WINDOW[1]),
                            rescale=(1.0, -1024.0))
            else:
                write_dicom(folder / file, raw, photometric, patient)
            if mask_folder is not None:
                target = mask_folder / Path(file).with_suffix(".npy" if n_image == 0 else ".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                if n_image == 0:
                    np.save(target, lungs.astype(np.uint8))
                else:
                    Image.fromarray(lungs.astype(np.uint8) * 255).save(target)
            cohort.rows.append((file, patient, label))
            cohort.good.append(file)
            cohort.display[file], cohort.lung_box[file] = display, box
            n_image += 1
    if bad_files:
        notes = folder / "P000" / "notes.dcm"
        notes.write_text("not an image\n")
        write_dicom(folder / "P001" / "no_pixels.dcm", None, patient_id="P001")
        raw = np.zeros((ROWS, COLS), dtype=np.uint16)
        write_dicom(folder / "P002" / "jpegls.dcm", raw, patient_id="P002", transfer_syntax=JPEGLSLossless)
        cohort.bad = {"P000/notes.dcm": "not a DICOM file", "P001/no_pixels.dcm": "no pixel data",
                      "P002/jpegls.dcm": "cannot decode pixel data"}
        cohort.rows += [("P000/notes.dcm", "P000", 0), ("P001/no_pixels.dcm", "P001", 1),
                        ("P002/jpegls.dcm", "P002", 0)]
        write_dicom(folder / "unlisted" / "extra.dcm", raw, patient_id="X")
        cohort.unlisted.append("unlisted/extra.dcm")
    write_labels(cohort.labels_csv, cohort.rows)
    return cohort


def write_labels(path: Path, rows: list[tuple[str, str, object]], header: str = "file,patient_id,label") -> Path:
    path.write_text("\n".join([header] + [",".join(map(str, row)) for row in rows]) + "\n")
    return path
