"""Where one image of a field lives: a CV7000 TIFF file, or one plane of an OME-Zarr image.

A :class:`~vstain.plate.index.Field` lists its images as *locations*: a :class:`pathlib.Path` for
a TIFF, a :class:`ZarrPlane` for a plane of an OME-Zarr HCS plate. Both have the parts of a path
that the code reads (``name``: the CV7000 file name, ``parent``, ``stat()``), and
:func:`read_image` reads either, so everything downstream of the plate index is format-blind.
zarr is imported only when a zarr plane is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from vstain.errors import PlateError
from vstain.plate.tiff import read_tiff


@dataclass(frozen=True)
class ZarrPlane:
    """One 2-D plane of an OME-Zarr image: channel ``index`` of the ``(c, y, x)`` array at ``array``.

    Attributes
    ----------
    array
        Folder of the full-resolution array (``<plate>.ome.zarr/<row>/<col>/<field>/0``).
    index
        Position on the channel axis.
    channel
        The channel's label (``C01`` ... ``C04Z07``).
    name
        The CV7000 file name this plane had (or would have): what messages, outputs and
        ``vstain convert --to cv7000`` use.
    chunk
        The chunk's key inside the array folder (one chunk per plane), e.g. ``c/3/0/0``.
    """

    array: Path
    index: int
    channel: str
    name: str
    chunk: str

    @property
    def parent(self) -> Path:
        """The image group the plane belongs to (the folder holding the array)."""
        return self.array.parent

    @property
    def chunk_path(self) -> Path:
        """The file that holds the plane's pixels."""
        return self.array / self.chunk

    def stat(self) -> os.stat_result:
        """``os.stat`` of the plane's chunk file (size and time change when the plane is rewritten)."""
        return self.chunk_path.stat()

    def read(self) -> np.ndarray:
        """The plane as stored, ``(H, W)``; raises :class:`PlateError` naming the plane if it cannot be read."""
        from vstain.plate.omezarr import read_plane

        return read_plane(self)

    def __str__(self) -> str:
        return f"{self.parent}:{self.channel}"


ImageLocation = Union[Path, ZarrPlane]
"""A TIFF file or a plane of an OME-Zarr image."""


def read_image(location: ImageLocation | str | os.PathLike[str]) -> np.ndarray:
    """Read one image as stored (no rescaling), from a TIFF file or an OME-Zarr plane.

    Raises
    ------
    PlateError
        Naming the file or plane, if it cannot be read.
    """
    if isinstance(location, ZarrPlane):
        return location.read()
    if not isinstance(location, (str, os.PathLike)):
        raise PlateError(f"{location!r}: not an image location")
    return read_tiff(location)
