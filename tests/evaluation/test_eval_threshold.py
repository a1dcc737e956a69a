"""Minimum cross-entropy thresholding with CellProfiler semantics."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_li

from vstain.evaluation.threshold import (
    ThresholdSettings,
    adaptive_threshold,
    apply_threshold,
    effective_window,
    global_threshold,
    min_cross_entropy_threshold,
    smooth_for_threshold,
)


def bimodal(rng: np.random.Generator, n: int = 4000) -> np.ndarray:
    return np.concatenate([rng.normal(0.1, 0.02, n), rng.normal(0.5, 0.05, n // 4)]).astype(np.float32)


def test_mce_is_scikit_image_threshold_li():
    values = bimodal(np.random.default_rng(0))
    assert min_cross_entropy_threshold(values) == pytest.approx(float(threshold_li(values)), abs=0)
    assert 0.15 < min_cross_entropy_threshold(values) < 0.45


def test_mce_shortcuts_for_empty_and_constant_input():
    assert min_cross_entropy_threshold(np.array([])) == 0.0
    assert min_cross_entropy_threshold(np.full(10, 0.25)) == 0.25
    assert min_cross_entropy_threshold(np.array([np.nan, 0.3, 0.3])) == 0.3


def test_global_threshold_applies_correction_then_bounds():
    values = bimodal(np.random.default_rng(1))
    t = float(threshold_li(values))
    loose = ThresholdSettings("global", 0, correction=2.0, lower=0.0, upper=1.0)
    assert global_threshold(values, loose) == pytest.approx(2 * t)
    floor = ThresholdSettings("global", 0, correction=1.0, lower=0.9, upper=1.0)
    assert global_threshold(values, floor) == 0.9
    ceiling = ThresholdSettings("global", 0, correction=1.0, lower=0.0, upper=0.05)
    assert global_threshold(values, ceiling) == 0.05


def test_smoothing_renormalises_edges_and_uses_the_spec_sigma():
    image = np.full((20, 30), 0.4, np.float32)
    np.testing.assert_allclose(smooth_for_threshold(image, 2.0), 0.4, rtol=1e-6)
    assert ThresholdSettings("global", 5.0, 1, 0, 1).sigma == pytest.approx(3.7070, abs=1e-4)
    assert ThresholdSettings("adaptive", 1.34, 1, 0, 1, 185).sigma == pytest.approx(0.99348, abs=1e-5)


def test_effective_window_clamps_to_half_the_field_with_a_warning():
    assert effective_window((400, 500), 185) == (185, None)
    window, warning = effective_window((300, 500), 185)
    assert window == 150 and "185" in warning and "150" in warning


def test_adaptive_threshold_follows_a_gradient_and_respects_guide_limits():
    rng = np.random.default_rng(2)
    h, w = 120, 240
    ramp = np.linspace(0.1, 0.25, w)[None, :] * np.ones((h, 1))
    image = ramp + rng.normal(0, 0.005, (h, w))
    spots = rng.random((h, w)) < 0.2
    image[spots] *= 2.5  # foreground 2.5 times the local background
    settings = ThresholdSettings("adaptive", 0, correction=1.0, lower=0.0, upper=1.0, window=40)
    thresholds = adaptive_threshold(image, settings)
    assert thresholds.shape == image.shape
    column_means = thresholds.mean(axis=0)
    assert column_means[-20:].mean() > 1.5 * column_means[:20].mean()
    guide = global_threshold(image, settings)
    assert thresholds.min() >= 0.7 * guide - 1e-12 and thresholds.max() <= 1.5 * guide + 1e-12
    binary, _ = apply_threshold(image, settings)
    # Local thresholds find the dim spots on the dark side, which one global threshold misses.
    dark = np.s_[:, : w // 4]
    recall = (binary[dark] & spots[dark]).sum() / spots[dark].sum()
    global_recall = ((image >= guide)[dark] & spots[dark]).sum() / spots[dark].sum()
    assert recall > 0.95 and global_recall < 0.8
    assert not (binary[dark] & ~spots[dark]).any()


def test_adaptive_threshold_is_block_threshold_at_block_centres():
    # Piecewise-constant two-level blocks: each block's Li threshold lies between its levels.
    block = np.zeros((30, 30))
    block[:, 15:] = 1.0
    image = np.block([[block * 0.2 + 0.1, block * 0.2 + 0.2], [block * 0.2 + 0.1, block * 0.2 + 0.2]])
    settings = ThresholdSettings("adaptive", 0, correction=1.0, lower=0.0, upper=1.0, window=30)
    thresholds = adaptive_threshold(image, settings)
    left, right = thresholds[15, 15], thresholds[15, 45]
    assert 0.1 < left < 0.3 and 0.2 < right < 0.4 and right > left


def test_adaptive_refuses_too_large_window_and_apply_threshold_warns():
    image = np.random.default_rng(3).random((100, 100))
    settings = ThresholdSettings("adaptive", 1.0, correction=1.0, lower=0.0, upper=1.0, window=67)
    with pytest.raises(ValueError):
        adaptive_threshold(image, settings)
    warnings: list[str] = []
    binary, thresholds = apply_threshold(image, settings, warnings=warnings, module="IdentifyPrimaryObjects(nuclei)")
    assert binary.dtype == bool and thresholds.shape == image.shape
    assert len(warnings) == 1 and warnings[0].startswith("IdentifyPrimaryObjects(nuclei)") and "67" in warnings[0]


def test_cp5_semantics_drops_zero_pixels_from_blocks():
    rng = np.random.default_rng(4)
    image = rng.uniform(0.2, 0.4, (80, 80))
    image[:, :20] = 0.0  # many exact zeros: CP 4.0.5 keeps them, CP 5 drops them
    settings = ThresholdSettings("adaptive", 0, correction=1.0, lower=0.0, upper=1.0, window=40)
    cp4 = adaptive_threshold(image, settings, semantics="cp4")
    cp5 = adaptive_threshold(image, settings, semantics="cp5")
    assert cp5[:, :20].mean() > cp4[:, :20].mean()
