"""Chest radiographs in DICOM -> one cohort file: uint8 images at a fixed size with labels and patient ids.

``medboost prepare dicom FOLDER --labels labels.csv --size 224 --out cohort.npz [--masks MASKS]`` follows the
PneumoLLM paper's preprocessing (Sec. 4.1): each file's *default* display window from its own tags, an optional
crop to the lungs' bounding rectangle from a segmentation mask, a resize to ``size`` x ``size``. Per file:

1. modality LUT (``pydicom.pixels.apply_modality_lut``: Modality LUT Sequence, else Rescale Slope/Intercept);
2. VOI LUT (``apply_voi_lut``'s choice and order: the first VOI LUT Sequence item, else the first Window
   Center/Width pair with its VOI LUT Function), mapped to [0, 1] by the transform's own output range (a window
   maps to [0, 1] exactly). A file with neither is scaled from its darkest to its brightest pixel (what the
   paper's ``pyplot.imsave`` does) and counted in the summary;
3. MONOCHROME1 (minimum = white) is inverted, so air is dark in every image;
4. with ``--masks``, a crop to the mask's bounding box widened by ``margin`` of its height/width on each side
   (the paper's "maximum external rectangle" is ``margin=0``); a mask of another size than the image is scaled;
5. resize to ``size`` x ``size``: ``aspect="stretch"`` (the paper's uniform 224 x 224; the lung rectangle is
   taller than wide, so it is squeezed) or ``"pad"`` (black borders to a square first, shapes kept);
   antialiased bilinear in float, then rounded to uint8.

The cohort file's layout is in ``cohort_file.py``.

Files are read one at a time into a preallocated uint8 array (S*S bytes per listed file); a bad file (not DICOM,
no pixel data, a transfer syntax no installed decoder reads, colour, multi-frame, no mask) is skipped with one
line that names it and counted in the summary; one whose image or .npy mask declares more than it holds or than
memory allows stops the command with one line naming it (``dicom_limits.py``, ``npz_arrays.py``). The archive is
written to a temporary file and renamed, so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .cohort_file import COHORT_FORMAT, COHORT_VERSION, MAX_CLASSES, write_cohort
from .dicom_limits import check_declared_size
from .errors import ConfigError, DataError, short
from .npz_arrays import read_npy
from .paths import confined

LABEL_COLUMNS = ("file", "patient_id", "label")
ASPECTS = ("stretch", "pad")
MASK_SUFFIXES = (".png", ".npy")


class SkipFile(Exception):
    """This file cannot be used; the message says why (one line)."""


# ------------------------------------------------------------------------------------------------ labels


@dataclass(frozen=True)
class Entry:
    file: str  # relative to the DICOM folder
    patient_id: str
    label: int


def read_labels(csv_path: Path, folder: Path) -> list[Entry]:
    """labels.csv (header ``file,patient_id,label``) checked against ``folder``; DataError on the first problem."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in LABEL_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)} (header is "
                                f"{','.join(header) or 'empty'}); the header must be {','.join(LABEL_COLUMNS)}")
            reader.fieldnames = header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot be read as a CSV file ({type(e).__name__}: {e})") from e
    entries, seen = [], set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        file, patient, label = ((row.get(c) or "").strip() for c in LABEL_COLUMNS)
        where = f"{csv_path} line {line}"
        if not file or not patient:
            raise DataError(f"{where}: empty {'file' if not file else 'patient_id'}; every row needs "
                            f"{','.join(LABEL_COLUMNS)}")
        try:
            value = int(label)
        except ValueError:
            raise DataError(f"{where}: label {short(label)} is not an integer class index (0, 1, ...)") from None
        if value < 0:
            raise DataError(f"{where}: label {value} is negative; labels are class indices 0, 1, ...")
        if value >= MAX_CLASSES:  # the model has an output per class up to the largest label
            raise DataError(f"{where}: label {short(value)} is not a class index 0 to {MAX_CLASSES - 1}; labels are "
                            f"class indices 0, 1, ...")
        if file in seen:
            raise DataError(f"{where}: file {short(file)} is listed twice")
        if not confined(folder, file, where).is_file():
            raise DataError(f"{where}: file {file} not found in {folder}; paths are relative to the DICOM folder")
        seen.add(file)
        entries.append(Entry(file, patient, value))
    if not entries:
        raise DataError(f"{csv_path}: no rows; list one image per line as {','.join(LABEL_COLUMNS)}")
    return entries


# --------------------------------------------------------------------------------------------- one image


def _pydicom():
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (apply_modality_lut, apply_voi_lut)
    except ImportError as e:
        raise ConfigError("reading DICOM needs pydicom: pip install 'medboost[dicom]' (or pip install pydicom)") from e
    return pydicom


def read_dataset(path: Path):
    """The DICOM dataset with its pixel data, or SkipFile saying why it is unusable."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise SkipFile("not a DICOM file (no 'DICM' header)") from None
    except Exception as e:  # truncated or garbled files fail in many ways inside pydicom
        raise SkipFile(f"unreadable DICOM ({type(e).__name__}: {_first_line(e)})") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise SkipFile("no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SkipFile(f"not MONOCHROME1/2 (PhotometricInterpretation '{photometric}'; colour is not supported)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise SkipFile(f"multi-frame ({ds.NumberOfFrames} frames; one radiograph per file is supported)")
    check_declared_size(ds, path)  # before the pixel data is decoded
    return ds


def display_image(ds) -> tuple[np.ndarray, str]:
    """float32 (rows, cols) in [0, 1], air dark, and which VOI step set the range: lut, window or minmax.

    Modality LUT, then the default VOI transform from the tags (see the module docstring), then MONOCHROME1
    inverted. SkipFile when the pixel data cannot be decoded or the tags cannot be applied."""
    _pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # no decoder plugin for the transfer syntax, corrupt or short pixel data
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise SkipFile(f"cannot decode pixel data ({name}): {_first_line(e)}") from None
    try:
        values = apply_modality_lut(pixels, ds)
        source = _voi_source(ds)
        if source == "lut":
            _widen_8bit_voi_lut(ds)
            if values.dtype.kind == "f":  # after a rescale; a LUT is indexed by integers
                values = np.rint(values).astype(np.int64)
            out = apply_voi(values, ds, index=0).astype(np.float64)
            lo, hi = _voi_lut_range(ds)
        elif source == "window":
            out = apply_windowing(values, ds, index=0)
            lo, hi = apply_windowing(np.array([-np.inf, np.inf]), ds, index=0)  # the window's black and white
        else:
            out = values.astype(np.float64)
            lo, hi = float(out.min()), float(out.max())
    except Exception as e:  # e.g. a window width < 1, an unknown VOI LUT Function, a malformed LUT
        raise SkipFile(f"cannot apply the modality/VOI tags ({type(e).__name__}: {_first_line(e)})") from None
    if hi <= lo:
        raise SkipFile("every pixel has the same value" if source == "minmax" else f"empty VOI {source} range")
    x = np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        x = 1.0 - x
    return x, source


def _voi_source(ds) -> str:
    """The VOI step ``apply_voi_lut(prefer_lut=True)`` would take: lut, window, or none of them (minmax)."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return "minmax"


def _widen_8bit_voi_lut(ds) -> None:
    """Declare an 8-bit VOI LUT as 16-bit (same entries): pydicom 3.0's ``apply_voi`` builds its table indices in
    the entries' dtype, so with 8-bit entries every index above 255 wraps around (a 4096-entry LUT for 12-bit
    pixels, the usual CR case, maps pixel 256 like pixel 0). Harmless: each entry still fits."""
    item = ds.VOILUTSequence[0]
    descriptor = list(item.LUTDescriptor)
    if descriptor[2] == 8:
        item.LUTDescriptor = descriptor[:2] + [16]


def _voi_lut_range(ds) -> tuple[float, float]:
    """The lowest and highest entry of the first VOI LUT (its real output range; some files declare 16 bits per
    entry but hold 12-bit values, so the nominal 2**bits - 1 would make them dark)."""
    from pydicom.pixels import apply_voi

    entries, first = ds.VOILUTSequence[0].LUTDescriptor[:2]
    table = apply_voi(np.arange(first, first + (entries or 2**16), dtype=np.int64), ds, index=0)
    return float(table.min()), float(table.max())


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2])[:200] or type(e).__name__


# ---------------------------------------------------------------------------------------- crop and resize


def find_mask(masks: Path, file: str) -> Path:
    """``masks/<file>.png|.npy``, or with the file's extension replaced (``a/b.dcm`` -> ``a/b.png``)."""
    rel = Path(file)
    for suffix in MASK_SUFFIXES:
        for candidate in (masks / (file + suffix), masks / rel.with_suffix(suffix)):
            if candidate.is_file():
                return candidate
    raise SkipFile(f"no mask ({rel.with_suffix('.png')} or .npy in {masks})")


def read_mask(path: Path) -> np.ndarray:
    """A 2D boolean mask from a PNG (any mode; non-zero = lung) or a .npy array, whose header is checked before the
    array is allocated (``npz_arrays.npy_header``: a DataError naming the file)."""
    try:
        if path.suffix == ".npy":
            mask = read_npy(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                mask = np.asarray(img.convert("L"))
    except DataError:
        raise
    except Exception as e:  # PIL and numpy raise many kinds for a damaged file
        raise SkipFile(f"unreadable mask ({path}: {type(e).__name__}: {_first_line(e)})") from None
    if mask.ndim != 2:
        raise SkipFile(f"mask not 2D ({path} has shape {mask.shape})")
    return mask != 0


def mask_box(mask: np.ndarray, shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive, of the mask's non-zero pixels in an image of ``shape``,
    widened by ``margin`` x the box's height/width on each side and clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise SkipFile("the mask is empty")
    sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]  # a mask drawn at another resolution
    top, bottom = rows[0] * sy, (rows[-1] + 1) * sy
    left, right = cols[0] * sx, (cols[-1] + 1) * sx
    dy, dx = margin * (bottom - top), margin * (right - left)
    return (max(0, int(np.floor(top - dy))), min(shape[0], int(np.ceil(bottom + dy))),
            max(0, int(np.floor(left - dx))), min(shape[1], int(np.ceil(right + dx))))


def resize_square(x: np.ndarray, size: int, aspect: str = "stretch") -> np.ndarray:
    """float [0, 1] (H, W) -> uint8 (size, size): stretched, or padded with black to a square first."""
    from PIL import Image

    if aspect == "pad":
        h, w = x.shape
        side = max(h, w)
        square = np.zeros((side, side), dtype=np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = x
        x = square
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(x, dtype=np.float32), mode="F")
                         .resize((size, size), Image.Resampling.BILINEAR))  # antialiased when shrinking
    return np.rint(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8)


def prepare_image(folder: Path, file: str, size: int, aspect: str = "stretch", masks: Path | None = None,
                  margin: float = 0.0) -> tuple[np.ndarray, tuple[int, int, int, int], str]:
    """``folder/file`` -> (uint8 (size, size), crop box, VOI source); SkipFile when it cannot be used.

    With ``masks``, the image is cropped to its mask's box (``find_mask``), looked up after the DICOM is read so
    that a file that is not an image is reported as such rather than as one without a mask."""
    ds = read_dataset(folder / file)
    x, source = display_image(ds)
    del ds  # the raw pixels are not needed any more
    box = (0, x.shape[0], 0, x.shape[1])
    if masks is not None:
        box = mask_box(read_mask(find_mask(masks, file)), x.shape, margin)
        x = x[box[0]:box[1], box[2]:box[3]]
    return resize_square(x, size, aspect), box, source


# ------------------------------------------------------------------------------------------ the cohort


@dataclass
class PrepareSummary:
    path: Path
    n_listed: int
    n_images: int
    n_patients: int
    label_counts: dict[int, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    minmax: list[str] = field(default_factory=list)  # files without VOI tags, scaled min..max
    unlisted: int = 0  # files under the folder that labels.csv does not name

    def lines(self) -> list[str]:
        counts = ", ".join(f"label {k}: {v}" for k, v in sorted(self.label_counts.items()))
        out = [f"{self.path}: {self.n_images} images of {self.n_patients} patients ({counts})",
               f"skipped {len(self.skipped)} of {self.n_listed} listed files"
               + (f" ({_reason_counts(self.skipped)})" if self.skipped else "")]
        if self.minmax:
            out.append(f"{len(self.minmax)} files had no VOI LUT or window tags and were scaled from their darkest "
                       f"to their brightest pixel")
        if self.unlisted:
            out.append(f"{self.unlisted} files in the folder are not in labels.csv and were not used")
        return out


def _reason_counts(skipped: list[tuple[str, str]]) -> str:
    """"2 no pixel data; 1 not a DICOM file": reasons grouped by their text before any " (details)"."""
    kinds: dict[str, int] = {}
    for _, reason in skipped:
        kind = reason.split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; ".join(f"{n} {kind}" for kind, n in kinds.items())


def prepare_dicom(folder: Path, labels_csv: Path, out: Path, size: int = 224, masks: Path | None = None,
                  margin: float = 0.05, aspect: str = "stretch", log: Callable[[str], None] = print,
                  progress: Callable[[int, int], None] | None = None) -> PrepareSummary:
    """Convert the files listed in ``labels_csv`` into the cohort file ``out`` (see the module docstring).

    ``log`` gets one line per skipped file; ``progress(done, total)`` is called after each file."""
    folder, out = Path(folder), Path(out)
    masks = Path(masks) if masks is not None else None
    _check_options(folder, masks, size, aspect, margin)
    entries = read_labels(labels_csv, folder)
    _check_memory(len(entries), size)
    _pydicom()  # fail before any work when pydicom is missing

    images = np.zeros((len(entries), size, size), dtype=np.uint8)  # the only array that grows with the cohort
    boxes = np.zeros((len(entries), 4), dtype=np.int32)
    kept: list[Entry] = []
    summary = PrepareSummary(out, len(entries), 0, 0, {})
    for i, entry in enumerate(entries):
        try:
            image, box, source = prepare_image(folder, entry.file, size, aspect, masks, margin)
        except SkipFile as e:
            summary.skipped.append((entry.file, str(e)))
            log(f"skipped {entry.file}: {e}")
        else:
            images[len(kept)], boxes[len(kept)] = image, box
            kept.append(entry)
            if source == "minmax":
                summary.minmax.append(entry.file)
        if progress is not None:
            progress(i + 1, len(entries))
    if not kept:
        raise DataError(f"none of the {len(entries)} files listed in {labels_csv} could be used (see the lines "
                        f"above); nothing written")

    listed = {Path(e.file) for e in entries}
    summary.unlisted = sum(1 for p in folder.rglob("*") if p.is_file() and p.relative_to(folder) not in listed)
    summary.n_images = len(kept)
    summary.n_patients = len({e.patient_id for e in kept})
    labels = np.array([[e.label] for e in kept], dtype=np.int64)
    summary.label_counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
    meta = {"format": COHORT_FORMAT, "version": COHORT_VERSION, "size": size, "aspect": aspect,
            "masks": str(masks) if masks is not None else None, "margin": margin if masks is not None else None,
            "source": str(folder), "labels_csv": str(labels_csv), "skipped": summary.skipped,
            "minmax": summary.minmax}
    write_cohort(out, {"images": images[:len(kept)], "labels": labels,
                       "patient_ids": np.array([e.patient_id for e in kept], dtype=str),
                       "files": np.array([e.file for e in kept], dtype=str), "crop_boxes": boxes[:len(kept)]}, meta)
    return summary


def _check_options(folder: Path, masks: Path | None, size: int, aspect: str, margin: float) -> None:
    if not folder.is_dir():
        raise DataError(f"DICOM folder not found: {folder}")
    if masks is not None and not masks.is_dir():
        raise DataError(f"mask folder not found: {masks}")
    if not 8 <= size <= MAX_SIZE:
        raise ConfigError(f"--size {size}: choose from 8 to {MAX_SIZE} (224 for the paper's backbones)")
    if aspect not in ASPECTS:
        raise ConfigError(f"--aspect {aspect}: choose {' or '.join(ASPECTS)}")
    if not 0 <= margin <= 1:
        raise ConfigError(f"--margin {margin}: a fraction of the mask's box, between 0 and 1")


MAX_SIZE = 4096  # a side: larger than any radiograph's detector


def _check_memory(n: int, size: int) -> None:
    """The cohort's images are held in memory until written: refuse before allocating more than there is."""
    import psutil

    needs, available = n * size * size, psutil.virtual_memory().available
    if needs > 0.8 * available:
        raise ConfigError(f"--size {size}: {n} images of {size}x{size} need {needs / 2**30:.1f} GiB, more than the "
                          f"{available / 2**30:.1f} GiB of memory available; choose a smaller --size")
