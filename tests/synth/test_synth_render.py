"""render_field: determinism, formats, and the physics a microscopist would check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vstain.synth import SynthParameters, render_field
from vstain.vocabulary import PIXEL_SIZE_UM, TARGETS


@pytest.fixture(scope="module")
def field20():
    return render_field(magnification="20x", seed=11, size=(256, 256))


def test_same_seed_gives_identical_arrays_and_different_seed_does_not(field20):
    again = render_field(magnification="20x", seed=11, size=(256, 256))
    assert np.array_equal(again.brightfield, field20.brightfield)
    assert np.array_equal(again.labels, field20.labels)
    for target in TARGETS:
        assert np.array_equal(again.targets[target], field20.targets[target])
    other = render_field(magnification="20x", seed=12, size=(256, 256))
    assert not np.array_equal(other.brightfield, field20.brightfield)
    assert not np.array_equal(other.targets["nuclei"], field20.targets["nuclei"])


def test_formats_shapes_and_dtypes(field20):
    assert field20.brightfield.shape == (7, 256, 256)
    assert field20.brightfield.dtype == np.uint16
    assert set(field20.targets) == {"nuclei", "lipids", "cytoplasm"}
    for image in field20.targets.values():
        assert image.shape == (256, 256) and image.dtype == np.uint16
    assert field20.labels.shape == (256, 256) and field20.labels.dtype == np.uint16
    # Labels are consecutive 1..n.
    assert set(np.unique(field20.labels)) == set(range(field20.n_nuclei + 1))
    assert field20.shift_px == {"C01": [0.0, 0.0], "C02": [0.0, 0.0], "C03": [0.0, 0.0]}  # aligned by default
    assert len(field20.defocus_um) == 7 and np.all(np.diff(field20.defocus_um) > 0)


def test_non_square_size_and_other_magnifications():
    field = render_field(magnification="60x", seed=0, size=(96, 130))
    assert field.brightfield.shape == (7, 96, 130)
    assert field.params.pixel_size_um == PIXEL_SIZE_UM["60x"]


def test_nuclei_in_the_mask_are_bright_and_inside_the_pipeline_window(field20):
    nuclei = field20.targets["nuclei"].astype(float)
    labels = field20.labels
    assert field20.n_nuclei >= 3
    background = np.median(nuclei[ndimage.binary_dilation(labels > 0, iterations=8) == 0])
    # Whole nuclei (not cut by the border), as the challenge pipeline would keep them.
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    means = ndimage.mean(nuclei, labels, index=np.arange(1, field20.n_nuclei + 1))
    whole = np.setdiff1d(np.arange(1, field20.n_nuclei + 1), border)
    assert len(whole) >= 2
    typical = np.median(means[whole - 1])
    # Above the 20x threshold floor (0.02 * 65535 = 1311) and below the filter cap (0.04 * 65535 = 2621).
    assert 1500 < typical < 2500
    assert background < 600
    diameters = 2 * np.sqrt(np.bincount(labels.ravel())[whole] / np.pi)
    assert np.all((diameters > 20) & (diameters < 80))  # the 20x pipeline's diameter limits


def test_raw_count_levels_are_near_the_reference_statistics(field20):
    bf = field20.brightfield.astype(float)
    assert 1800 < bf.mean() < 3400  # reference 20x brightfield mean ≈ 2600
    assert 150 < field20.targets["nuclei"].mean() < 900  # reference 412
    assert 300 < field20.targets["lipids"].mean() < 1400  # reference 700
    assert 250 < field20.targets["cytoplasm"].mean() < 1400  # reference 663


def test_droplets_flip_brightfield_contrast_through_focus(field20):
    lipids = field20.targets["lipids"].astype(float)
    droplets_fl = lipids > np.percentile(lipids, 85)
    droplets = ndimage.binary_erosion(droplets_fl, iterations=2)  # default plates are aligned
    surround = ndimage.binary_dilation(droplets, iterations=6) & ~ndimage.binary_dilation(droplets, iterations=3)
    contrast = [
        field20.brightfield[z][droplets].mean() - field20.brightfield[z][surround].mean() for z in (0, 6)
    ]
    assert np.sign(contrast[0]) != np.sign(contrast[1])
    assert min(abs(c) for c in contrast) > 50  # well above the shot noise of the means


def test_nuclei_are_faint_in_brightfield_compared_with_droplets(field20):
    labels = field20.labels  # aligned with brightfield on the default plate
    focus = field20.brightfield[3].astype(float)
    ring = ndimage.binary_dilation(labels > 0, iterations=6) & ~ndimage.binary_dilation(labels > 0, iterations=2)
    nucleus_contrast = abs(focus[labels > 0].mean() - focus[ring].mean()) / focus.mean()
    assert nucleus_contrast < 0.05


def test_cytoplasm_stain_is_excluded_from_droplets(field20):
    lipids = field20.targets["lipids"].astype(float)
    cytoplasm = field20.targets["cytoplasm"].astype(float)
    big_droplets = ndimage.binary_erosion(lipids > np.percentile(lipids, 90), iterations=3)
    cell_body = (cytoplasm > np.percentile(cytoplasm, 60)) & (lipids < np.percentile(lipids, 50))
    assert big_droplets.any() and cell_body.any()
    assert cytoplasm[big_droplets].mean() < 0.7 * cytoplasm[cell_body].mean()


def test_parameters_override_and_reject_unknown_names():
    params = SynthParameters.for_magnification("40x", nucleus_counts=1000.0)
    assert params.nucleus_counts == 1000.0 and params.pixel_size_um == PIXEL_SIZE_UM["40x"]
    with pytest.raises(ValueError, match="unknown synth parameter"):
        SynthParameters.for_magnification("40x", nucleus_colour=1)
    with pytest.raises(ValueError, match="not 20x"):
        render_field(magnification="20x", params=params, size=(32, 32))
