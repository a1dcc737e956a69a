"""CellProfiler image operations of the lipid branch against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from centrosome.filter import circular_average_filter, median_filter
from skimage.morphology import disk, erosion, reconstruction

from vstain.evaluation import image_ops


def test_stretch_maps_min_to_0_and_max_to_1():
    x = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_array_equal(image_ops.stretch(x), [[0.0, 0.25], [0.5, 1.0]])


def test_stretch_keeps_float32_and_clips_a_constant_image():
    x = np.array([[0.1, 0.3]], np.float32)
    assert image_ops.stretch(x).dtype == np.float32
    np.testing.assert_array_equal(image_ops.stretch(np.full((2, 2), 3.0)), np.ones((2, 2)))
    np.testing.assert_array_equal(image_ops.stretch(np.full((2, 2), 0.25)), np.full((2, 2), 0.25))


def test_image_math_average_with_factors_1_2_and_clipping():
    a = np.array([0.3, 1.0, -0.6, np.nan])
    b = np.array([0.6, 1.4, 0.0, 0.2])
    out = image_ops.image_math([a, b], operation="average", factors=(1, 2))
    # (a + 2b) / 3 = 0.5, 1.2667 -> 1, -0.2 -> 0, NaN -> 0
    np.testing.assert_allclose(out, [0.5, 1.0, 0.0, 0.0])


def test_image_math_add_none_multiply_post_processing():
    np.testing.assert_allclose(
        image_ops.image_math([np.array([0.1, 0.2]), np.array([0.3, 0.95])], operation="add"), [0.4, 1.0]
    )
    np.testing.assert_allclose(
        image_ops.image_math([np.array([0.3, 0.9])], operation="none", add=-0.4), [0.0, 0.5]
    )
    np.testing.assert_allclose(
        image_ops.image_math([np.array([0.1, 0.3]), np.array([0.5, 1.0])], operation="multiply", factors=(5, 1)),
        [0.25, 1.0],
    )
    # multiply-then-add order, and no clipping when asked
    np.testing.assert_allclose(
        image_ops.image_math([np.array([0.5])], operation="none", multiply=4.0, add=-1.0, clip=False), [1.0]
    )
    with pytest.raises(ValueError):
        image_ops.image_math([np.zeros(2)], operation="subtract")


@pytest.mark.parametrize("radius", [1, 2, 5, 10])
def test_disk_filters_equal_scipy_footprint_filters(radius):
    x = ndi.gaussian_filter(np.random.default_rng(radius).random((37, 45)), 1.0)
    np.testing.assert_array_equal(
        image_ops.disk_min_filter(x, radius=radius), ndi.minimum_filter(x, footprint=disk(radius))
    )
    np.testing.assert_array_equal(
        image_ops.disk_max_filter(x, radius=radius), ndi.maximum_filter(x, footprint=disk(radius))
    )


def test_speckle_tophat_of_a_bright_3x3_spot_on_flat_background():
    x = np.full((21, 21), 0.1)
    x[9:12, 9:12] = 0.5
    expected = np.zeros_like(x)
    expected[9:12, 9:12] = 0.5 - 0.1  # the disk(5) opening removes the spot entirely
    np.testing.assert_array_equal(image_ops.enhance_speckles(x, feature_size=10), expected)


def _dark_holes_by_definition(x: np.ndarray) -> np.ndarray:
    inverted = x.max() - x
    eroded, previous, out = inverted, inverted, np.zeros(x.shape)
    for i in range(6):
        eroded = erosion(eroded, disk(1))
        rebuilt = reconstruction(eroded, inverted, "dilation", disk(1))
        if i >= 1:
            out = np.maximum(out, previous - rebuilt)
        previous = rebuilt
    return out


def test_dark_holes_finds_a_pit_of_radius_2_and_ignores_flat_ground():
    x = np.full((32, 32), 0.8)
    pit = np.zeros_like(x, bool)
    pit[14:19, 14:19] = disk(2).astype(bool)
    x[pit] = 0.2
    out = image_ops.enhance_dark_holes(x, hole_size=(3, 10))
    np.testing.assert_allclose(out[pit], 0.6)
    assert np.all(out[~pit] == 0)
    assert np.all(image_ops.enhance_dark_holes(np.full((16, 16), 0.4)) == 0)


def test_dark_holes_ignores_pits_wider_than_the_range():
    x = np.full((40, 40), 0.8)
    x[12:27, 12:27][disk(7).astype(bool)] = 0.2  # survives 6 cross erosions
    assert np.all(image_ops.enhance_dark_holes(x, hole_size=(3, 10)) == 0)


def test_dark_holes_on_ranks_equals_the_float_definition():
    rng = np.random.default_rng(0)
    x = ndi.gaussian_filter(rng.random((48, 40)), 1.2)
    x = np.round(x * 4000) / 4000  # ties, like 16-bit data
    np.testing.assert_allclose(image_ops.enhance_dark_holes(x), _dark_holes_by_definition(x), atol=1e-15, rtol=0)


def test_pillbox_kernel_is_matlab_disk_6():
    kernel = image_ops.pillbox_kernel(6)
    assert kernel.shape == (13, 13)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel.T)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
    # Entries are the area of each pixel inside the circle of radius 6 (anti-aliasing), over
    # the total: check a few against a fine numerical integration.
    sub = (np.arange(400) + 0.5) / 400 - 0.5

    def coverage(dy: int, dx: int) -> float:
        yy, xx = np.meshgrid(dy + sub, dx + sub, indexing="ij")
        return float(np.mean(yy**2 + xx**2 <= 36))

    centre = kernel[6, 6]
    for dy, dx in [(0, 0), (3, 4), (4, 4), (2, 5), (5, 3), (0, 5)]:
        assert kernel[6 + dy, 6 + dx] / centre == pytest.approx(coverage(dy, dx), abs=2e-3)
    assert kernel[0, 0] == 0  # corner of the square lies outside the circle


def test_circular_average_is_zero_padded_without_edge_renormalisation():
    out = image_ops.circular_average_smooth(np.ones((30, 30)), diameter=10)
    kernel = image_ops.pillbox_kernel(6)
    assert out[15, 15] == pytest.approx(1.0)
    assert out[0, 0] == pytest.approx(kernel[6:, 6:].sum())  # only a quarter of the disk is inside
    x = np.random.default_rng(1).random((25, 31))
    np.testing.assert_allclose(image_ops.circular_average_smooth(x), circular_average_filter(x, 6), atol=1e-15)


def test_classic_argsort_sorts_and_is_stable_below_17_elements():
    rng = np.random.default_rng(2)
    for n in (0, 1, 5, 16, 17, 300):
        values = rng.integers(0, 4, n)
        order = image_ops.classic_argsort(values)
        assert sorted(order.tolist()) == list(range(n))
        assert np.all(np.diff(values[order]) >= 0)
        if n <= 16:  # insertion sort only
            np.testing.assert_array_equal(order, np.argsort(values, kind="stable"))


def test_rank_quantise_with_numpy_ties_equals_centrosome():
    from centrosome.rankorder import rank_order

    x = np.random.default_rng(3).integers(0, 3000, (60, 70)) / 65535
    ranks, values = image_ops.rank_quantise(x, tie_order="numpy")
    reference, reference_values = rank_order(x, nbins=255)
    np.testing.assert_array_equal(values[ranks], reference_values[reference])
    classic_ranks, classic_values = image_ops.rank_quantise(x, tie_order="classic")
    assert classic_values.size <= 255 and np.all(np.diff(classic_values) > 0)


@pytest.mark.parametrize("radius", [2, 3])
def test_octagon_median_equals_centrosome(radius):
    levels = np.random.default_rng(radius).integers(0, 255, (23, 31))
    np.testing.assert_array_equal(
        image_ops.octagon_median(levels, radius=radius),
        median_filter(levels.astype(np.int64), np.ones(levels.shape, bool), radius),
    )


def test_median_smooth_has_at_most_255_levels_and_matches_centrosome():
    x = np.random.default_rng(4).random((64, 64))  # 4096 distinct values
    out = image_ops.median_smooth(x, diameter=2, tie_order="numpy")
    assert np.unique(out).size <= 255
    assert np.isin(out, x).all()
    np.testing.assert_array_equal(out, median_filter(x, np.ones(x.shape, bool), 2))
    assert np.unique(image_ops.median_smooth(x, diameter=2)).size <= 255


def test_merge_keeps_lone_objects_and_joins_overlapping_ones():
    big = np.zeros((16, 20), np.int32)
    small = np.zeros_like(big)
    big[1:4, 1:4] = 1  # overlaps nothing
    big[10:13, 10:13] = 2
    small[11:13, 11:16] = 1  # overlaps big 2 and sticks out to the right
    small[1:3, 15:18] = 2  # overlaps nothing
    out = image_ops.merge_objects(big, small)
    assert out.max() == 3
    # raster order of the connected components: big 1, small 2, big 2 with small 1
    assert np.all(out[1:4, 1:4] == 1)
    assert np.all(out[1:3, 15:18] == 2)
    joined = (big == 2) | (small == 1)
    assert np.all(out[joined] == 3) and np.count_nonzero(out == 3) == joined.sum()


def test_merge_gives_disputed_pixels_to_the_nearest_big_droplet():
    big = np.zeros((9, 12), np.int32)
    big[5:8, 0:4] = 1
    big[5:8, 8:12] = 2
    small = np.zeros_like(big)
    small[5:8, 2:10] = 1  # bridges both big droplets
    out = image_ops.merge_objects(big, small)
    left, right = out[6, 0], out[6, 11]
    assert left != right and left > 0 and right > 0
    assert np.all(out[5:8, 0:6] == left)  # columns 4, 5 are nearer the left droplet
    assert np.all(out[5:8, 6:12] == right)  # columns 6, 7 are nearer the right one
    assert out.max() == 2


def test_dark_holes_in_threads_equals_serial():
    rng = np.random.default_rng(3)
    x = ndi.gaussian_filter(rng.random((64, 57)), 1.5).astype(np.float32)
    serial = image_ops.enhance_dark_holes(x, threads=1)
    np.testing.assert_array_equal(image_ops.enhance_dark_holes(x, threads=2), serial)
    np.testing.assert_allclose(serial, _dark_holes_by_definition(x.astype(np.float64)), atol=1e-7, rtol=0)
