"""Tiny CV7000 plates written with tifffile, for the plate tests.

A module of its own, not the conftest: test files import these by name, and several test folders
have a conftest.py, so ``from conftest import`` found whichever folder's conftest was imported first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff

PLATE_ID = "AssayPlate_Greiner_#655090"


def field_files(
    folder: Path,
    well: str,
    field: int,
    *,
    rng: np.random.Generator,
    shape: tuple[int, int] = (16, 16),
    targets: tuple[int, ...] = (1, 2, 3),
    planes: tuple[int, ...] = tuple(range(1, 8)),
    plate: str = PLATE_ID,
) -> dict[tuple[int, int], Path]:
    """Write one field (brightfield planes + fluorescence channels); return {(channel, z): path}."""
    written = {}
    base = ImageName(plate=plate, well=well, field=field, channel=4, z=1, action=4)
    for z in planes:
        path = folder / format_name(base.for_channel(4, z=z))
        write_tiff(path, rng.integers(0, 65536, size=shape, dtype=np.uint16))
        written[(4, z)] = path
    for c in targets:
        path = folder / format_name(base.for_channel(c))
        write_tiff(path, rng.integers(0, 65536, size=shape, dtype=np.uint16))
        written[(c, 1)] = path
    return written


def make_plate(
    root: Path,
    *,
    magnification: str = "20x",
    wells: tuple[str, ...] = ("B03", "C02"),
    fields: int = 2,
    shape: tuple[int, int] = (16, 16),
    targets: tuple[int, ...] = (1, 2, 3),
    flat: bool = False,
    seed: int = 0,
) -> Path:
    """A plate ``root/<mag>_images/`` (or flat ``root/``) with random uint16 images; returns the image folder."""
    rng = np.random.default_rng(seed)
    folder = root if flat else root / f"{magnification}_images"
    folder.mkdir(parents=True, exist_ok=True)
    for well in wells:
        for number in range(1, fields + 1):
            field_files(folder, well, number, rng=rng, shape=shape, targets=targets)
    return folder


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    """A valid 20x plate: wells B03 and C02, 2 fields each, 16x16 images, all targets."""
    root = tmp_path / "plate"
    make_plate(root)
    return root
