"""Exact checks of the building blocks: rasteriser, optics, camera."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vstain.synth.field import _sequential
from vstain.synth.noise import expose
from vstain.synth.optics import defocus_stack, vignetting
from vstain.synth.parameters import SynthParameters
from vstain.synth.raster import accumulate, iter_disc_pixels, periodic_noise


def test_disc_pixels_cover_the_window_and_clip_at_the_border():
    # radius 1 -> half-width ceil(1) + 1 = 2 -> a 5x5 window.
    (batch,) = list(iter_disc_pixels(np.array([[2.0, 2.0]]), np.array([1.0]), (5, 5)))
    assert len(batch.flat) == 25
    assert batch.dy.min() == -2 and batch.dy.max() == 2
    (corner,) = list(iter_disc_pixels(np.array([[0.0, 0.0]]), np.array([1.0]), (5, 5)))
    assert len(corner.flat) == 9  # only the 3x3 quarter inside the image
    assert sorted(corner.flat.tolist()) == [0, 1, 2, 5, 6, 7, 10, 11, 12]


def test_disc_pixels_batches_add_up(monkeypatch):
    import vstain.synth.raster as raster

    monkeypatch.setattr(raster, "_BATCH_PIXELS", 30)
    centers = np.array([[5.0, 5.0], [10.0, 10.0], [15.0, 3.0]])
    batches = list(raster.iter_disc_pixels(centers, np.array([1.0, 1.0, 1.0]), (20, 20)))
    assert len(batches) == 3
    assert [b.owner[0] for b in batches] == [0, 1, 2]


def test_accumulate_sums_repeated_pixels():
    image = accumulate(np.array([0, 3, 3]), np.array([1.0, 2.0, 0.5]), (2, 2))
    assert image.tolist() == [[1.0, 0.0], [0.0, 2.5]]


def test_periodic_noise_is_standardised_and_wraps_smoothly():
    tile = periodic_noise(np.random.default_rng(0), 64, sigma_px=3.0)
    assert abs(tile.mean()) < 1e-5 and abs(tile.std() - 1) < 1e-4
    # Smooth across the wrap as inside: the jump from the last to the first column is typical.
    inner = np.abs(np.diff(tile, axis=1)).mean()
    wrap = np.abs(tile[:, 0] - tile[:, -1]).mean()
    assert wrap < 2 * inner


def test_vignetting_is_one_at_the_centre_and_falls_to_the_corner():
    full = (101, 201)
    v = vignetting(full, full_shape=full, strength=0.2)
    assert v[50, 100] == pytest.approx(1.0)
    corner2 = 50.5**2 + 100.5**2
    assert v[0, 0] == pytest.approx(1 - 0.2 * (50**2 + 100**2) / corner2, rel=1e-6)


def test_clear_field_stays_uniform_at_every_defocus():
    params = SynthParameters.for_magnification("20x")
    field = np.ones((64, 64), dtype=np.complex64)
    stack = defocus_stack(field, pixel_size_um=params.pixel_size_um, defocus_um=np.array([-4.0, 0.0, 4.0]),
                          params=params)
    np.testing.assert_allclose(stack, 1.0, atol=1e-4)


def test_weak_phase_object_is_invisible_in_focus_and_flips_sign_with_defocus():
    params = SynthParameters.for_magnification("20x", condenser_na=0.05)
    yy, xx = np.mgrid[:128, :128]
    phase = 0.05 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 6.0**2))
    field = np.exp(1j * phase).astype(np.complex64)
    below, focus, above = defocus_stack(field, pixel_size_um=params.pixel_size_um,
                                        defocus_um=np.array([-3.0, 0.0, 3.0]), params=params)
    assert np.abs(focus - 1).max() < 0.2 * np.abs(above - 1).max()
    # Transport of intensity: the defocus contrast of a weak phase object is odd in z.
    assert np.sign(below[64, 64] - 1) == -np.sign(above[64, 64] - 1)
    np.testing.assert_allclose(below - 1, -(above - 1), atol=0.1 * np.abs(above - 1).max())


def test_camera_noise_has_poisson_variance_and_saturates():
    rng = np.random.default_rng(0)
    expected = np.full((200, 200), 1100.0, dtype=np.float32)
    image = expose(expected, rng, offset=100.0, gain=1.0, read_noise=2.0)
    assert image.dtype == np.uint16
    assert image.mean() == pytest.approx(1100, abs=1.0)
    assert image.var() == pytest.approx(1000 + 4, rel=0.05)
    dim = expose(np.full((200, 200), 105.0), rng, offset=100.0, gain=1.0, read_noise=0.0)
    assert dim.mean() == pytest.approx(105, abs=0.1) and dim.var() == pytest.approx(5, rel=0.1)
    saturated = expose(np.full((4, 4), 1e6), rng, offset=100.0, gain=1.0, read_noise=2.0)
    assert np.all(saturated == 65535)


def test_sequential_relabels_present_labels_in_order():
    labels, owners = _sequential(np.array([[0, 7, 7], [3, 0, 9]], dtype=np.int32))
    assert labels.tolist() == [[0, 2, 2], [1, 0, 3]]
    assert owners.tolist() == [3, 7, 9]


def test_typical_nucleus_level_follows_blur_halo_and_chromocenters():
    from vstain.synth.fluorescence import typical_nucleus_level

    sharp = SynthParameters.for_magnification("20x", haze_fraction=0.0, fluorescence_blur_um=0.05,
                                              nucleus_diameter_um=(10.0, 10.0), nucleus_aspect=(1.0, 1.0))
    # A 5 µm disc (15.4 px) barely blurred keeps almost all its light.
    assert typical_nucleus_level(sharp) == pytest.approx(sharp.nucleus_counts, rel=0.02)
    hazy = dataclasses.replace(sharp, haze_fraction=0.4, haze_blur_um=6.0)
    assert typical_nucleus_level(hazy) < 0.85 * typical_nucleus_level(sharp)
    # Chromocenters: 10 foci of ~1.37 µm² at +50% on a 25π µm² nucleus: 1 + 0.5 * 13.7 / (25π).
    foci = dataclasses.replace(sharp, chromocenters_per_nucleus=(10, 10), chromocenter_brightness=0.5)
    expected = 1 + 0.5 * 13.7 / (25 * np.pi)
    assert typical_nucleus_level(foci) / typical_nucleus_level(sharp) == pytest.approx(expected, rel=1e-6)
