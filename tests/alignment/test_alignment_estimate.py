"""Offset estimation and resampling: exact shifts on hand-made images, a synthetic field, a blank stain."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vstain.alignment.estimate import bin_blocks, brightfield_features, estimate_field, estimate_offset, fast_length
from vstain.alignment.resample import to_brightfield_frame, to_fluorescence_frame, translate


def _blobs(shape=(256, 256), seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 3) * 100


def _moved(image, d):
    """A stain seeing ``image`` offset by ``d``: stain[q] = image[q + d] (Fourier shift, exact for smooth images)."""
    return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(image), (-d[0], -d[1]))).real.astype(np.float32)


def test_translate_moves_content_by_the_offset():
    image = np.zeros((9, 9), np.float32)
    image[4, 4] = 1.0
    moved = translate(image, 2, -1)
    assert moved[6, 3] == pytest.approx(1.0) and moved.sum() == pytest.approx(1.0)
    half = translate(image, 0.5, 0)  # bilinear: split between two rows
    assert half[4, 4] == pytest.approx(0.5, abs=1 / 32) and half[5, 4] == pytest.approx(0.5, abs=1 / 32)


def test_frames_are_inverse_and_follow_the_sign_convention():
    ramp = np.add.outer(np.arange(40.0), 3 * np.arange(50.0)).astype(np.float32)  # linear: bilinear is exact
    offset = (1.25, -2.5)
    stain = ramp + (offset[0] + 3 * offset[1])  # stain[q] = ramp[q + d]
    aligned = to_brightfield_frame(stain, offset)
    np.testing.assert_allclose(aligned[5:-5, 5:-5], ramp[5:-5, 5:-5], atol=0.1)
    back = to_fluorescence_frame(aligned, offset)
    np.testing.assert_allclose(back[5:-5, 5:-5], stain[5:-5, 5:-5], atol=0.1)


@pytest.mark.parametrize("d", [(0.0, 0.0), (2.3, -1.7), (-6.6, 5.4)])
def test_estimate_offset_recovers_a_known_subpixel_shift(d):
    reference = _blobs()
    found = estimate_offset(reference, _moved(reference, d))
    assert (found.dy, found.dx) == pytest.approx(d, abs=0.15)
    assert found.confidence == 1.0 and found.tiles == 4


def testbin_blocks_averages_2x2_blocks_and_drops_the_odd_edge():
    image = np.array([[1, 3, 5, 7, 9], [1, 3, 5, 7, 9], [0, 4, 8, 0, 1]], dtype=np.uint16)
    np.testing.assert_array_equal(bin_blocks(image), [[2.0, 6.0]])  # (1+3+1+3)/4, (5+7+5+7)/4
    assert bin_blocks(np.full((2, 2), 65535, np.uint16))[0, 0] == 65535  # no integer overflow
    np.testing.assert_allclose(bin_blocks(np.arange(49.0).reshape(7, 7), 3), [[8.0, 11.0], [29.0, 32.0]])


def test_fft_unfriendly_sides_are_cropped_tofast_lengths():
    # 2154 = 2·3·359 and 2554 = 2·1277 (a full 20x field): the largest lengths below them whose only
    # prime factors are 2, 3, 5, 7, 11 are 2112 = 2⁶·3·11 and 2541 = 3·7·11².
    assert (fast_length(2154), fast_length(2554)) == (2112, 2541)
    assert (fast_length(512), fast_length(359), fast_length(97)) == (512, 352, 96)


@pytest.mark.parametrize("d", [(1.4, -3.2)])
def test_estimate_offset_on_a_prime_sized_field_matches_the_shift(d, monkeypatch):
    # 359 x 397 (both prime): the correlation runs on a centred 352 x 396 crop of both images, the
    # 179-px tiles on 176 x 176 crops.
    from scipy import fft

    shapes, fft2 = set(), fft.fft2
    monkeypatch.setattr(fft, "fft2", lambda a, **kw: shapes.add(a.shape) or fft2(a, **kw))
    reference = _blobs((359, 397), seed=3)
    found = estimate_offset(reference, _moved(reference, d))
    assert shapes == {(352, 396), (176, 176)}
    assert (found.dy, found.dx) == pytest.approx(d, abs=0.15)
    assert found.confidence == 1.0


def test_blank_stain_gives_low_confidence_not_a_wild_offset():
    rng = np.random.default_rng(1)
    brightfield = np.stack([_blobs(seed=s) + 1000 for s in range(7)])
    noise = rng.normal(100, 3, (256, 256)).astype(np.float32)
    found = estimate_field(brightfield, {"nuclei": noise, "lipids": np.full((256, 256), 100, np.uint16)})
    assert found["nuclei"].confidence < 0.5
    assert found["lipids"].confidence == 0.0 and (found["lipids"].dy, found["lipids"].dx) == (0.0, 0.0)


def test_synthetic_field_lipids_and_cytoplasm_offsets_are_recovered():
    from vstain.synth.field import render_field
    from vstain.synth.parameters import SynthParameters

    params = SynthParameters.for_magnification(
        "20x", shift_px=(3.2, -2.6), shift_channel_px=((0, 0), (0.3, -0.2), (-0.25, 0.3)))
    field = render_field(magnification="20x", seed=5, size=(512, 512), params=params)
    stains = {"lipids": field.targets["lipids"], "cytoplasm": field.targets["cytoplasm"]}
    found = estimate_field(field.brightfield, stains)
    for stain, channel in (("lipids", "C02"), ("cytoplasm", "C03")):
        assert (found[stain].dy, found[stain].dx) == pytest.approx(tuple(field.shift_px[channel]), abs=0.3), stain


def test_brightfield_features_by_hand_and_as_the_formula_says():
    # Constant planes: each relative to its mean is 1, their local contrast 0, then the constant.
    flat = np.stack([np.full((8, 10), v, np.uint16) for v in (100, 200, 400)])
    features = brightfield_features(flat)
    assert features.shape == (3 + 4, 8, 10) and features.dtype == np.float32
    assert np.array_equal(features[:3], np.ones((3, 8, 10), np.float32))
    assert np.array_equal(features[3:6], np.zeros((3, 8, 10), np.float32))
    assert np.array_equal(features[6], np.ones((8, 10), np.float32))
    # Seven planes of noise: exactly the documented formula (planes over their means; local mean
    # absolute deviation of the first, middle and last planes; a constant), the input untouched.
    rng = np.random.default_rng(0)
    stack = rng.uniform(50, 500, (7, 40, 50)).astype(np.float32)
    before = stack.copy()
    relative = stack / stack.mean(axis=(1, 2), keepdims=True)
    outer = relative[[0, 3, 6]]
    smooth = ndimage.gaussian_filter(outer, (0, 3.0, 3.0), truncate=3.0)
    contrast = ndimage.gaussian_filter(np.abs(outer - smooth), (0, 3.0, 3.0), truncate=3.0)
    expected = np.concatenate([relative, contrast, np.ones((1, 40, 50), np.float32)])
    assert np.array_equal(brightfield_features(stack), expected)
    assert np.array_equal(stack, before)
