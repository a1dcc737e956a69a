"""Shared pytest set-up: quiet third-party chatter, GPU marker, small synthetic helpers."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def write_random_plate(root, *, magnification="20x", wells=("B02", "B03"), fields=(1, 2), size=(64, 80), seed=0,
                       with_targets=True, with_masks=True):
    """Write a tiny plate of random uint16 images in the challenge layout; return its root.

    Nuclei masks are a few square labels so nucleus-centred sampling has something to centre on.
    """
    import numpy as np

    from vstain.plate.naming import ImageName, format_name
    from vstain.plate.tiff import write_tiff

    rng = np.random.default_rng(seed)
    image_dir = root / f"{magnification}_images"
    mask_dir = root / "masks" / f"{magnification}_images"
    for well in wells:
        for number in fields:
            base = ImageName(plate="AssayPlate_Greiner_#655090", well=well, field=number, channel=4, action=4)
            for z in range(1, 8):
                write_tiff(image_dir / format_name(base.for_channel(4, z=z)),
                           rng.integers(1000, 4000, size, dtype=np.uint16))
            if with_targets:
                for channel in (1, 2, 3):
                    write_tiff(image_dir / format_name(base.for_channel(channel)),
                               rng.integers(0, 3000, size, dtype=np.uint16))
            if with_masks:
                labels = np.zeros(size, dtype=np.uint16)
                labels[10:20, 10:20] = 1
                labels[30:42, 40:52] = 2
                write_tiff(mask_dir / format_name(base.for_channel(1)), labels)
    return root


@pytest.fixture
def random_plate(tmp_path):
    """A 2-well x 2-field 64x80 random plate with targets and masks (20x layout)."""
    return write_random_plate(tmp_path / "plate")


@pytest.fixture
def make_random_plate(tmp_path):
    """:func:`write_random_plate` with any of its options, into ``tmp_path / name``."""
    def make(name="plate", **options):
        return write_random_plate(tmp_path / name, **options)
    return make
