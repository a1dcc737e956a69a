"""Rank reconstruction against scikit-image's public ``reconstruction`` (the definition)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.morphology import disk, reconstruction

from vstain.evaluation import reconstruction as rank_reconstruction
from vstain.evaluation.reconstruction import CROSS, reconstruct_ranks


def _cases(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        levels = int(rng.integers(1, 30))
        mask = rng.integers(0, levels, (height, width))
        if rng.random() < 0.5:  # eroded seeds, as dark holes and granularity use them
            seed_image = ndi.grey_erosion(mask, footprint=CROSS, mode="reflect")
        else:  # arbitrary seeds below the mask, with plateaus
            seed_image = np.minimum(mask, rng.integers(0, levels, (height, width)))
        yield seed_image, mask


def test_equals_scikit_image_on_random_images_with_ties():
    for seed_image, mask in _cases(0, 300):
        expected = reconstruction(seed_image, mask, method="dilation", footprint=disk(1))
        np.testing.assert_array_equal(reconstruct_ranks(seed_image, mask), expected)


def test_a_single_seed_fills_its_basin_up_to_the_pass():
    # Two basins of height 5 and 7 joined by a pass at 2; a seed of 4 in the left one.
    mask = np.array([[5, 5, 2, 7, 7]])
    seed_image = np.array([[4, 0, 0, 0, 0]])
    np.testing.assert_array_equal(reconstruct_ranks(seed_image, mask), [[4, 4, 2, 2, 2]])


def test_fallback_without_the_compiled_loop_gives_the_same(monkeypatch):
    cases = list(_cases(1, 20))
    fast = [reconstruct_ranks(s, m) for s, m in cases]
    monkeypatch.setattr(rank_reconstruction, "_downhill_loop", None)
    for (s, m), expected in zip(cases, fast):
        np.testing.assert_array_equal(reconstruct_ranks(s, m), expected)


@pytest.mark.parametrize(
    "changed_loop",
    [
        lambda *args: None,  # a loop that no longer does the work: caught by the self-check
        lambda ranks, strides: None,  # a loop with another signature
    ],
)
def test_a_changed_private_loop_costs_speed_not_results(monkeypatch, changed_loop):
    cases = list(_cases(3, 10))
    monkeypatch.setattr(rank_reconstruction, "_downhill_loop", changed_loop)
    for s, m in cases:
        expected = reconstruction(s, m, method="dilation", footprint=disk(1))
        np.testing.assert_array_equal(reconstruct_ranks(s, m), expected)
    assert rank_reconstruction._fast_loop_usable() is False


def test_the_installed_loop_passes_the_self_check():
    assert rank_reconstruction._fast_loop_usable() is True


def test_large_rank_range_uses_wide_keys():
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 100_000, (60, 70))
    seed_image = ndi.grey_erosion(mask, footprint=CROSS, mode="reflect")
    expected = reconstruction(seed_image, mask, method="dilation", footprint=disk(1))
    np.testing.assert_array_equal(reconstruct_ranks(seed_image, mask), expected)


@pytest.mark.parametrize(
    ("seed_image", "mask", "message"),
    [
        (np.zeros((3, 3)), np.zeros((3, 3), int), "integer ranks"),
        (np.zeros((3, 3), int), np.zeros((3, 4), int), "one shape"),
        (np.full((3, 3), 2), np.ones((3, 3), int), "must not exceed"),
        (np.full((3, 3), -1), np.ones((3, 3), int), "non-negative"),
    ],
)
def test_refuses_bad_input(seed_image, mask, message):
    with pytest.raises((TypeError, ValueError), match=message):
        reconstruct_ranks(seed_image, mask)


def test_wide_rank_sort_is_a_valid_ascending_order():
    from vstain.evaluation.reconstruction import _argsort

    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**31 - 1, 5000).astype(np.uint32)
    values[:100] = values[100:200]  # ties
    order = _argsort(values, int(values.max()))
    assert sorted(order.tolist()) == list(range(values.size))
    np.testing.assert_array_equal(values[order], np.sort(values))
