"""Known stain-to-brightfield shifts: the recorded offset is the true one, masks follow C01."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import ndimage, optimize
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from vstain.errors import ConfigError
from vstain.synth import MAX_SHIFT_PX, SynthParameters, generate_plate, render_field, site_offsets
from vstain.synth.misregistration import shift_overrides
from vstain.synth.parameters import SynthParameterError, max_shift_reach_px
from vstain.vocabulary import TARGETS

SIZE = (192, 192)
SHIFTED = dict(shift_px=(2.37, -1.61), shift_channel_px=((0.0, 0.0), (0.5, 0.25), (-0.3, 0.7)))


def measured_shift(reference: np.ndarray, moved: np.ndarray, *, border: int = 12) -> np.ndarray:
    """``(dy, dx)`` with ``moved[q] = reference[q + d]``, to a few thousandths of a pixel.

    Phase correlation (Hann window) gives a start within ~0.1 px; a least-squares fit of a
    quintic-spline shift (an interpolation independent of the renderer's Fourier shift) refines it.
    """
    reference = reference.astype(float)
    moved = moved.astype(float)
    w = window("hann", reference.shape)
    start = phase_cross_correlation((reference - reference.mean()) * w, (moved - moved.mean()) * w,
                                    upsample_factor=20, normalization=None)[0]
    inner = (slice(border, -border), slice(border, -border))

    def cost(d: np.ndarray) -> float:
        return float(np.mean((reference[inner] - ndimage.shift(moved, d, order=5, mode="nearest")[inner]) ** 2))

    return optimize.minimize(cost, start, method="Nelder-Mead", options=dict(xatol=1e-3, fatol=1e-9)).x


@pytest.fixture(scope="module")
def pair20():
    aligned = SynthParameters.for_magnification("20x")
    shifted = dataclasses.replace(aligned, **SHIFTED)
    # Seed 9: three whole nuclei and 25 droplets in view.
    return (render_field(magnification="20x", seed=9, size=SIZE, params=aligned, camera_noise=False),
            render_field(magnification="20x", seed=9, size=SIZE, params=shifted, camera_noise=False))


def test_default_plate_is_aligned():
    params = SynthParameters.for_magnification("20x")
    assert all(offset == (0.0, 0.0) for offset in site_offsets(params, 5).values())
    field = render_field(magnification="20x", seed=1, size=(48, 48))
    assert field.shift_px == {"C01": [0.0, 0.0], "C02": [0.0, 0.0], "C03": [0.0, 0.0]}


def test_recorded_subpixel_shift_is_the_true_one(pair20):
    aligned, shifted = pair20
    # Shifts within 3 px keep the render canvas: the specimen and the brightfield are the same.
    assert np.array_equal(aligned.brightfield, shifted.brightfield)
    expected = {"C01": [2.37, -1.61], "C02": [2.87, -1.36], "C03": [2.07, -0.91]}
    for channel, target in zip(("C01", "C02", "C03"), TARGETS):
        assert shifted.shift_px[channel] == pytest.approx(expected[channel], abs=1e-9)
        found = measured_shift(aligned.targets[target], shifted.targets[target])
        assert np.abs(found - expected[channel]).max() < 0.05, (channel, found)


def test_shift_truth_at_40x_and_60x_beyond_the_legacy_margin():
    # Shifts reaching past 3 px widen the render canvas (a new specimen), so the aligned reference
    # here carries the same reach on another stain (C03): both renders share one canvas.
    shift = (-1.3, 4.6)
    for mag in ("40x", "60x"):
        base = SynthParameters.for_magnification(mag)
        aligned = dataclasses.replace(base, shift_channel_px=((0.0, 0.0), (0.0, 0.0), shift))
        shifted = dataclasses.replace(base, shift_channel_px=((0.0, 0.0), shift, (0.0, 0.0)))
        a = render_field(magnification=mag, seed=2, size=SIZE, params=aligned, camera_noise=False)
        b = render_field(magnification=mag, seed=2, size=SIZE, params=shifted, camera_noise=False)
        assert np.array_equal(a.brightfield, b.brightfield)
        # Lipids: every 40x/60x crop of this size has droplets (nuclei may be missing).
        found = measured_shift(a.targets["lipids"], b.targets["lipids"])
        assert np.abs(found - shift).max() < 0.05, (mag, found)
        assert b.shift_px["C02"] == [-1.3, 4.6]


def test_sign_convention_and_masks_follow_c01_for_an_integer_shift():
    aligned = SynthParameters.for_magnification("20x")
    a = render_field(magnification="20x", seed=3, size=SIZE, params=aligned, camera_noise=False)
    b = render_field(magnification="20x", seed=3, size=SIZE, params=dataclasses.replace(aligned, shift_px=(3.0, -2.0)),
                     camera_noise=False)
    # A structure at brightfield (y, x) appears at fluorescence (y - dy, x - dx): b[q] = a[q + d].
    inner_b = (slice(0, SIZE[0] - 3), slice(2, SIZE[1]))
    inner_a = (slice(3, SIZE[0]), slice(0, SIZE[1] - 2))
    for target in TARGETS:
        difference = np.abs(b.targets[target][inner_b].astype(int) - a.targets[target][inner_a].astype(int))
        assert difference.max() <= 1, target  # rounding of the same expected counts
    assert a.n_nuclei > 0
    assert np.array_equal(b.labels[inner_b] > 0, a.labels[inner_a] > 0)


def test_masks_follow_c01_at_a_subpixel_shift(pair20):
    aligned, shifted = pair20
    nuclei = shifted.targets["nuclei"].astype(float)
    assert shifted.n_nuclei > 0
    # The mask moved with C01: inside it C01 is as bright as the aligned pair's, not diluted by the shift.
    inside_shifted = nuclei[shifted.labels > 0].mean()
    inside_aligned = aligned.targets["nuclei"][aligned.labels > 0].mean()
    assert inside_shifted == pytest.approx(inside_aligned, rel=0.02)
    # And each whole nucleus moved by the C01 offset (to a small fraction of a pixel).
    ca, cb = _whole_centroids(aligned.labels), _whole_centroids(shifted.labels)
    assert len(ca) >= 2
    for centroid in ca:
        nearest = cb[np.argmin(np.linalg.norm(cb - (centroid - [2.37, -1.61]), axis=1))]
        assert np.abs((centroid - nearest) - [2.37, -1.61]).max() < 0.2


def _whole_centroids(labels: np.ndarray) -> np.ndarray:
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    whole = np.setdiff1d(np.arange(1, labels.max() + 1), border)
    return np.array(ndimage.center_of_mass(labels > 0, labels, whole)).reshape(-1, 2)


def test_scale_difference_moves_the_field_edges_apart():
    scale = 0.004
    aligned = SynthParameters.for_magnification("20x")
    scaled = dataclasses.replace(aligned, shift_px=(1.0, 0.5), shift_scale=scale)
    size = (160, 256)
    a = render_field(magnification="20x", seed=6, size=size, params=aligned, camera_noise=False)
    b = render_field(magnification="20x", seed=6, size=size, params=scaled, camera_noise=False)
    centre = ((size[0] - 1) / 2, (size[1] - 1) / 2)
    # The local shift at brightfield position p is d - s·(p - c) (docs/synthetic-data.md).
    for cols in (slice(0, 128), slice(128, 256)):
        local = measured_shift(a.targets["cytoplasm"][:, cols], b.targets["cytoplasm"][:, cols])
        tile_centre = (centre[0], (cols.start + cols.stop - 1) / 2)
        expected = [1.0 - scale * (tile_centre[0] - centre[0]), 0.5 - scale * (tile_centre[1] - centre[1])]
        assert np.abs(local - expected).max() < 0.05, (cols, local, expected)


def test_site_offsets_are_smooth_in_the_field_and_the_same_in_every_well(tmp_path):
    root = tmp_path / "p"
    generate_plate(root, wells=2, fields=4, seed=0, size=(24, 24), preset="shifted")
    manifest = json.loads((root / "plate.json").read_text())
    params = SynthParameters.from_dict(manifest["parameters"]["20x"])
    by_site: dict[str, list] = {}
    for entry in manifest["fields"]:
        site = int(entry["field"][1:])
        expected = site_offsets(params, site)
        for channel, target in zip(("C01", "C02", "C03"), TARGETS):
            assert entry["shift_px"][channel] == pytest.approx(list(expected[target]), abs=1e-6)
            magnitude = math.hypot(*entry["shift_px"][channel])
            assert 3.0 <= magnitude <= 6.0  # the shifted preset: 3-6 px
        assert entry["shift_scale"] == params.shift_scale
        by_site.setdefault(entry["field"], []).append(entry["shift_px"])
    assert all(a == b for a, b in by_site.values())  # same site, same offset, whichever well
    sites = sorted(by_site)
    assert len({json.dumps(by_site[s][0]) for s in sites}) == len(sites)  # varies with the site
    assert "c + (1 + s) * (p - c) - [dy, dx]" in manifest["shift_convention"]


def test_max_shift_bounds_every_offset_and_zero_aligns(tmp_path):
    for max_shift in (0.0, 0.5, 4.0, 8.0):
        values = shift_overrides(max_shift, np.random.default_rng(3))
        params = SynthParameters.for_magnification("60x", **values)
        assert max_shift_reach_px(params) <= max_shift + 1e-9
        offsets = [site_offsets(params, s) for s in range(1, 30)]
        assert max(abs(v) for o in offsets for pair in o.values() for v in pair) <= max_shift
    generate_plate(tmp_path / "m", wells=1, fields=3, seed=2, size=(24, 24), max_shift_px=8.0)
    manifest = json.loads((tmp_path / "m" / "plate.json").read_text())
    assert manifest["max_shift_px"] == 8.0
    values = [abs(v) for e in manifest["fields"] for pair in e["shift_px"].values() for v in pair]
    assert 2.0 < max(values) <= 8.0
    generate_plate(tmp_path / "z", wells=1, fields=2, seed=2, size=(24, 24), preset="shifted", max_shift_px=0)
    manifest = json.loads((tmp_path / "z" / "plate.json").read_text())
    assert all(v == 0 for e in manifest["fields"] for pair in e["shift_px"].values() for v in pair)


def test_shifts_beyond_the_canvas_allowance_are_refused(tmp_path):
    with pytest.raises(SynthParameterError, match="shift_px"):
        SynthParameters.for_magnification("20x", shift_px=(MAX_SHIFT_PX + 1, 0.0))
    with pytest.raises(ConfigError, match="`max_shift_px`: 20 is out of range"):
        generate_plate(tmp_path / "x", wells=1, fields=1, size=(24, 24), max_shift_px=20)
    assert not (tmp_path / "x").exists()
