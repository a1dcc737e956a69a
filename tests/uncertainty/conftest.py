"""Fixtures: a small synthetic plate with real stains and three tiny (untrained) model bundles.

Untrained networks are fine here: conformal intervals are valid for any model; these tests check
the machinery and its refusals, the statistics are checked in test_uncertainty_conformal.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vstain.vocabulary import TARGET_CHANNELS, TARGETS

torch.set_num_threads(1)

TINY = dict(init_filters=8, down_blocks=[1, 1], up_blocks=[1, 1], bottleneck_layers=1, growth_rate=4)


def _normalizer(low, high, channels) -> dict:
    from vstain.plate.normalize import Normalizer

    return Normalizer(np.atleast_1d(low), np.atleast_1d(high), channels=channels, kind="minmax").to_dict()


def save_tiny_bundles(folder: Path, *, seed: int = 0, training_fields: dict | None = None) -> Path:
    """One tiny tiramisu per stain, saved as bundles in ``folder``."""
    from vstain.inference.bundle import save_bundle
    from vstain.models import build_model

    folder.mkdir(parents=True, exist_ok=True)
    for i, target in enumerate(TARGETS):
        torch.manual_seed(seed + i)
        network = build_model("tiramisu", **TINY).eval()
        save_bundle(folder / f"{target}.safetensors", network, {
            "architecture": {"name": "tiramisu", "arguments": dict(TINY)},
            "targets": [target],
            "magnification": "20x",
            "normalization": {
                "input": _normalizer([0.0] * 7, [1000.0] * 7, [f"C04Z{z:02d}" for z in range(1, 8)]),
                "targets": {target: _normalizer(100.0, 3000.0, [f"C{TARGET_CHANNELS[target]:02d}"])},
            },
            "training": {"recipe": "test", **({"fields": training_fields} if training_fields else {})},
        })
    return folder


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Path:
    """2 wells x 3 fields of 128², 20x, reference preset, with stains."""
    from vstain.synth.plate import generate_plate

    root = tmp_path_factory.mktemp("uncertainty") / "plate"
    generate_plate(root, magnification="20x", wells=2, fields=3, seed=3, size=(128, 128))
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    return save_tiny_bundles(tmp_path_factory.mktemp("models") / "models")


@pytest.fixture
def make_bundles():
    """:func:`save_tiny_bundles`, for tests that need other weights or training metadata."""
    return save_tiny_bundles
