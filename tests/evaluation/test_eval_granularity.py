"""MeasureGranularity: hand-computable spectra and the CellProfiler 4 / 5 resampling difference."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.morphology import disk

from vstain.evaluation.granularity import background_subtracted, granularity_spectrum, measure_granularity


def _disks(radius: int, centres: list[tuple[int, int]], shape=(64, 64), value=0.5) -> np.ndarray:
    image = np.zeros(shape)
    footprint = disk(radius).astype(bool)
    for y, x in centres:
        image[y - radius : y + radius + 1, x - radius : x + radius + 1][footprint] = value
    return image


@pytest.mark.parametrize("semantics", ["cp4", "cp5"])
def test_constant_image_has_an_all_zero_spectrum(semantics):
    # float32, as both CellProfiler releases read images
    spectrum = granularity_spectrum(np.full((64, 80), 0.3, np.float32), semantics=semantics)
    assert spectrum == [0.0] * 16


def test_float64_interpolation_residue_is_amplified_like_cellprofiler_5():
    # Linear interpolation of a constant in float64 leaves ~1e-17 residues; the spectrum divides
    # by max(mean, eps), so GS_1 becomes 1.7969 -- the value CellProfiler 5's own
    # measure_granularity returns for this image (checked against cellprofiler_library).
    spectrum = granularity_spectrum(np.full((64, 80), 0.3), semantics="cp5")
    assert spectrum[0] == pytest.approx(1.7969, abs=1e-4)
    assert spectrum[1:] == [0.0] * 15


def test_flat_disks_vanish_at_the_erosion_that_removes_them():
    # A flat disk(3) is restored by reconstruction until cross erosions empty it: its centre lies
    # at city-block distance 4 from the outside (e.g. (0, 4)), so it vanishes at step 4.
    image = _disks(3, [(12, 12), (12, 40), (40, 20), (45, 48)])
    spectrum = granularity_spectrum(image, subsample=1, background_subsample=1, radius=10)
    expected = [0.0] * 16
    expected[3] = 100.0
    np.testing.assert_allclose(spectrum, expected, atol=1e-4)


def test_spectrum_peaks_at_each_disk_size_in_proportion_to_its_mass():
    # disk(5): nearest outside point in city-block distance is (1, 5) at 6 -> step 6.
    image = _disks(3, [(12, 12), (40, 20)]) + _disks(5, [(14, 44), (46, 46)])
    spectrum = np.array(granularity_spectrum(image, subsample=1, background_subsample=1, radius=10))
    mass3, mass5 = 2 * disk(3).sum(), 2 * disk(5).sum()
    assert spectrum[3] == pytest.approx(100 * mass3 / (mass3 + mass5), abs=1e-3)
    assert spectrum[5] == pytest.approx(100 * mass5 / (mass3 + mass5), abs=1e-3)
    assert np.abs(np.delete(spectrum, [3, 5])).max() < 1e-3


def test_background_larger_than_the_element_is_removed():
    ramp = np.linspace(0.1, 0.3, 64)[None, :] * np.ones((64, 1))
    flat = background_subtracted(ramp, subsample=1, background_subsample=1, radius=10)
    # A linear ramp survives the opening, so nothing is left, except within the element's
    # reach of the bright edge, where the reflected border makes a ridge that the opening cuts.
    assert flat[:, : 64 - 11].max() < 1e-6
    assert flat[:, -1].min() > 0.02


def test_cp4_and_cp5_agree_when_quarter_shapes_are_integers_and_differ_otherwise():
    rng = np.random.default_rng(0)
    image = (rng.integers(300, 3000, (128, 96)) / 65535).astype(np.float32)
    cp4 = granularity_spectrum(image, semantics="cp4")
    cp5 = granularity_spectrum(image, semantics="cp5")
    np.testing.assert_allclose(cp4, cp5, rtol=1e-5, atol=1e-6)
    yy, xx = np.mgrid[0:134, 0:150]  # 33.5 x 37.5 after subsampling
    odd = (0.01 + 0.03 * np.sin(yy / 20.0) ** 2 + 0.02 * (xx / 150) ** 2).astype(np.float32)
    assert background_subtracted(odd, semantics="cp4").shape == background_subtracted(odd, semantics="cp5").shape
    assert not np.array_equal(background_subtracted(odd, semantics="cp4"), background_subtracted(odd, semantics="cp5"))


def test_measure_granularity_names_the_challenge_columns():
    values = measure_granularity(np.full((32, 32), 0.2), image_name="Bodipy")
    assert list(values) == [f"Granularity_{i}_Bodipy" for i in range(1, 17)]
    with pytest.raises(ValueError):
        granularity_spectrum(np.zeros((8, 8)), semantics="cp3")
