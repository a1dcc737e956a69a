"""Tiny real networks saved as bundles, normaliser dicts and a plate, for the inference and training tests.

A module of its own, not the conftest: test files import these by name, and several test folders
have a conftest.py, so ``from conftest import`` found whichever folder's conftest was imported first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff
from vstain.vocabulary import TARGET_CHANNELS

# Tiny networks are dominated by per-op overhead; on a shared 2-core machine two intra-op threads
# spin against each other (measured 1 s vs 0.03 s per forward), so the tests use one.
torch.set_num_threads(1)

TINY_TIRAMISU = dict(init_filters=8, down_blocks=[1, 1], up_blocks=[1, 1], bottleneck_layers=1, growth_rate=4)


def normalizer_dict(low, high, *, channels) -> dict:
    """Min/max normaliser dict mapping [low, high] (per channel) to [0, 1]."""
    from vstain.plate.normalize import Normalizer

    return Normalizer(np.atleast_1d(low), np.atleast_1d(high), channels=channels, kind="minmax").to_dict()


def bundle_metadata(architecture="tiramisu", arguments=None, targets=("lipids",), magnification="20x",
                    target_range=(100.0, 4000.0)) -> dict:
    return {
        "architecture": {"name": architecture, "arguments": dict(arguments or TINY_TIRAMISU)},
        "targets": list(targets),
        "magnification": magnification,
        "normalization": {
            "input": normalizer_dict([0.0] * 7, [1000.0] * 7, channels=[f"C04Z{z:02d}" for z in range(1, 8)]),
            "targets": {t: normalizer_dict(*target_range, channels=[f"C{TARGET_CHANNELS[t]:02d}"]) for t in targets},
        },
        "training": {"recipe": "test"},
        "validation": {"mae": 0.1},
    }


@pytest.fixture
def tiny_tiramisu():
    from vstain.models import build_model

    torch.manual_seed(0)
    return build_model("tiramisu", **TINY_TIRAMISU).eval()


def write_plate(root: Path, *, shape=(64, 80), wells=("B02",), fields=(1, 2), magnification="20x", seed=0) -> Path:
    """A minimal challenge-layout plate: 7 brightfield planes per field, no targets."""
    rng = np.random.default_rng(seed)
    folder = root / f"{magnification}_images"
    for well in wells:
        for number in fields:
            for z in range(1, 8):
                name = ImageName(plate="AssayPlate_Test", well=well, field=number, channel=4, z=z, action=4)
                write_tiff(folder / format_name(name), rng.integers(0, 1000, shape, dtype=np.uint16))
    return root
