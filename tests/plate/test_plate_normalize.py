"""Normalisers: reference min/max behaviour, robust percentiles, exact inverses, JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vstain.errors import VstainError
from vstain.plate.normalize import Normalizer
from vstain.plate.stats import BRIGHTFIELD_KEYS, ChannelStats, PlateStats, reference_stats


def test_minmax_reproduces_the_reference_formula():
    norm = Normalizer.from_stats(reference_stats(), "20x", ("lipids",))
    raw = np.array([[0, 1733, 3467, 5000]], dtype=np.uint16)
    np.testing.assert_allclose(norm.forward(raw, dtype=np.float64), [[0.0, 1733 / 3467, 1.0, 1.0]], rtol=1e-15)
    assert norm.clip and norm.kind == "minmax"


def test_brightfield_planes_each_get_their_own_range():
    norm = Normalizer.from_stats(reference_stats(), "20x")
    assert norm.channels == BRIGHTFIELD_KEYS
    assert norm.low.tolist() == [205, 185, 123, 109, 134, 144, 183]
    stack = np.stack([np.full((3, 4), v, np.uint16) for v in norm.low])  # each plane at its own min
    assert np.all(norm.forward(stack) == 0.0)
    stack = np.stack([np.full((3, 4), v, np.uint16) for v in norm.high])
    np.testing.assert_allclose(norm.forward(stack), 1.0, rtol=1e-6)
    assert norm.forward(stack).dtype == np.float32


def test_forward_is_scale_and_offset_broadcast_over_channels():
    rng = np.random.default_rng(0)
    norm = Normalizer(rng.uniform(0, 100, 7), rng.uniform(5000, 9000, 7), channels=BRIGHTFIELD_KEYS, clip=False)
    batch = rng.integers(0, 10000, (2, 7, 5, 6)).astype(np.uint16)
    expected = batch * norm.scale[None, :, None, None] + norm.offset[None, :, None, None]
    np.testing.assert_allclose(norm.forward(batch, dtype=np.float64), expected, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(norm.forward(batch[1], dtype=np.float64), expected[1], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(norm.scale * (norm.high - norm.low), 1.0, rtol=1e-15)
    with pytest.raises(ValueError, match="C=7"):
        norm.forward(batch[:, :3])
    with pytest.raises(ValueError, match="one channel"):
        norm.forward(batch[0, 0])


@settings(max_examples=200, deadline=None)
@given(
    low=st.floats(0, 60000, allow_nan=False),
    width=st.floats(1, 65535, allow_nan=False),
    kind=st.sampled_from(["minmax", "percentile"]),
    clip=st.sampled_from([None, True, False]),
    seed=st.integers(0, 2**32 - 1),
)
def test_inverse_of_forward_is_the_identity(low: float, width: float, kind: str, clip: bool | None, seed: int):
    high = low + width
    norm = Normalizer([low], [high], channels=("C02",), kind=kind, clip=clip)  # type: ignore[arg-type]
    x = np.random.default_rng(seed).uniform(low, high, (4, 5))
    x[0, :2] = low, high
    back = norm.inverse(norm.forward(x, dtype=np.float64))
    np.testing.assert_allclose(back, x, rtol=0, atol=8 * np.finfo(float).eps * high)


def test_inverse_to_uint16_rounds_and_clips():
    norm = Normalizer([100.0], [1100.0], channels=("C01",))
    y = np.array([[-0.5, 0.0, 0.0004, 0.5, 1.0, 80.0]])
    assert norm.inverse(y, dtype=np.uint16).tolist() == [[0, 100, 100, 600, 1100, 65535]]


def _stats_with_percentiles() -> PlateStats:
    per = {0.01: 110.0, 50.0: 400.0, 99.99: 2110.0}
    return PlateStats(channels={"40x": {"C03": ChannelStats(min=30, max=32504, percentiles=per)}})


def test_percentile_kind_is_robust_and_unclipped_by_default():
    norm = Normalizer.from_stats(_stats_with_percentiles(), "40x", ("cytoplasm",), kind="percentile")
    assert (norm.low.item(), norm.high.item(), norm.clip, norm.percentiles) == (110.0, 2110.0, False, (0.01, 99.99))
    y = norm.forward(np.array([[110, 1110, 32504]], np.uint16), dtype=np.float64)
    np.testing.assert_allclose(y, [[0.0, 0.5, (32504 - 110) / 2000]], rtol=1e-15)
    np.testing.assert_allclose(norm.inverse(y), [[110, 1110, 32504]], rtol=1e-15)  # the tail survives
    clipped = Normalizer.from_stats(_stats_with_percentiles(), "40x", ("C03",), kind="percentile", clip=True)
    assert clipped.forward(np.array([[32504]], np.uint16)).item() == 1.0
    with pytest.raises(VstainError, match="percentile 1 was not computed"):
        Normalizer.from_stats(_stats_with_percentiles(), "40x", ("C03",), kind="percentile", percentiles=(1, 99))


def test_dict_round_trip_through_json():
    for norm in (
        Normalizer.from_stats(reference_stats(), "60x"),
        Normalizer.from_stats(_stats_with_percentiles(), "40x", ("C03",), kind="percentile"),
    ):
        again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
        assert again == norm
        x = np.arange(7 * 4, dtype=np.uint16).reshape(len(norm.channels), -1, 1) * 37
        np.testing.assert_array_equal(again.forward(x), norm.forward(x))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Normalizer([5.0], [5.0], channels=("C01",)), "range \\[5, 5\\] is empty"),
        (lambda: Normalizer([0.0, 1.0], [2.0], channels=("C01",)), "one low and one high per channel"),
        (lambda: Normalizer([0.0], [1.0], channels=("C01",), kind="zscore"), "unknown normalisation"),  # type: ignore[arg-type]
        (lambda: Normalizer.from_dict({"kind": "minmax", "low": [0], "high": [1]}), "lacks key 'channels'"),
        (lambda: Normalizer.from_stats(reference_stats(), "20x", ("C05",)), "unknown channel key"),
    ],
)
def test_bad_normaliser_input_is_one_clear_error(make, message: str):
    with pytest.raises(VstainError, match=message):
        make()
