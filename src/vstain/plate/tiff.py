"""16-bit TIFF reading and atomic writing.

Writes go to a temporary file in the destination folder and are renamed into place, so a crash
never leaves a half-written image under a real name. Nothing here modifies an existing input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from vstain.atomic import atomic_path
from vstain.errors import PlateError


def read_tiff(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one single-page TIFF image as stored (no rescaling).

    Raises
    ------
    PlateError
        Naming the file, if it cannot be read.
    """
    try:
        return tifffile.imread(os.fspath(path))
    except FileNotFoundError:
        raise PlateError(f"{path}: no such file") from None
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise PlateError(f"{path}: unreadable TIFF ({exc.__class__.__name__}: {exc})") from None


def tiff_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the first page, read from the header only (no pixel data)."""
    try:
        with tifffile.TiffFile(os.fspath(path)) as tif:
            page = tif.pages[0]
            return tuple(page.shape), np.dtype(page.dtype)
    except Exception as exc:
        raise PlateError(f"{path}: unreadable TIFF ({exc.__class__.__name__}: {exc})") from None


def tiff_description(path: str | os.PathLike[str]) -> str | None:
    """The ``ImageDescription`` tag of the first page (header only), or None if it has none."""
    try:
        with tifffile.TiffFile(os.fspath(path)) as tif:
            tag = tif.pages[0].tags.get("ImageDescription")
            return None if tag is None else str(tag.value)
    except Exception as exc:
        raise PlateError(f"{path}: unreadable TIFF ({exc.__class__.__name__}: {exc})") from None


def write_tiff(
    path: str | os.PathLike[str], image: np.ndarray, *, overwrite: bool = True, description: str | None = None
) -> Path:
    """Write a 2-D uint16 image atomically as an uncompressed TIFF.

    The file carries no ``MaxSampleValue`` tag, so CellProfiler reads it on the 0-65535 scale.

    Parameters
    ----------
    path
        Destination file.
    image
        2-D array of dtype uint16 (other dtypes are refused: converting is the caller's decision).
    overwrite
        If False and ``path`` exists, raise instead of replacing it.
    description
        Text for the ``ImageDescription`` tag (e.g. which model wrote a prediction); by default
        tifffile's own shape note.
    """
    target = Path(path)
    if image.dtype != np.uint16:
        raise ValueError(f"{target}: refusing to write {image.dtype} data; convert to uint16 first")
    if image.ndim != 2:
        raise ValueError(f"{target}: expected a 2-D image, got shape {image.shape}")
    if not overwrite and target.exists():
        raise PlateError(f"{target}: exists already; refusing to overwrite it")
    with atomic_path(target) as tmp:
        extra = {} if description is None else {"description": description, "metadata": None}
        tifffile.imwrite(tmp, np.ascontiguousarray(image), photometric="minisblack", **extra)
    return target
