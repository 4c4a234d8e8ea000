"""The image size a DICOM file may declare, checked before its pixel data is decoded: decoding allocates what Rows
and Columns say (a file of a few hundred bytes may declare 65535 x 65535 pixels, and a compressed one may decode to
it), and windowing makes float copies of that size. A file over the bounds stops ``prepare dicom`` with one data
error line naming it (exit 3), rather than being skipped like a damaged file: the cohort would silently lack it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError

# A side in pixels: well above any radiograph detector's (mammography's are under 6,000), far below what the tags
# allow (65,535).
MAX_SIDE = 16_384
# Bytes per pixel while a file is decoded and windowed: the decoded array (up to 8 bytes), the modality and VOI
# steps' float64 copies and the float32 image.
BYTES_PER_PIXEL = 32
MEMORY_SHARE = 0.8  # of the available memory: the cohort's images and the rest of the process need the remainder


def check_declared_size(ds, path: Path) -> None:
    """DataError naming ``path`` where the dataset ``ds`` (one grayscale frame) declares an image (Rows x Columns)
    larger than ``MAX_SIDE`` a side or than this machine's available memory can decode; nothing is allocated."""
    import psutil

    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except Exception:  # a garbled tag: decoding the pixel data fails on it, and the file is skipped
        return
    fix = "remove it from labels.csv (or check how it was exported)"
    if max(rows, cols) > MAX_SIDE:
        raise DataError(f"{path}: declares an image of {rows} x {cols} pixels (Rows x Columns), more than the "
                        f"{MAX_SIDE:,} a side may have; {fix}")
    needs, available = rows * cols * BYTES_PER_PIXEL, psutil.virtual_memory().available
    if needs > MEMORY_SHARE * available:
        raise DataError(f"{path}: its {rows} x {cols} image needs {needs / 2**30:.1f} GiB to decode and window, more "
                        f"than the {available / 2**30:.1f} GiB of memory available; {fix} or use a machine with "
                        f"more memory")
