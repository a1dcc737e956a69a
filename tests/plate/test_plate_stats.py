"""Streaming statistics: exact against numpy on the concatenated data, JSON round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from plate_files import make_plate

from vstain.errors import VstainError
from vstain.plate.index import index_plate
from vstain.plate.stats import (
    BRIGHTFIELD_KEYS,
    PERCENTILES,
    ChannelStats,
    PlateStats,
    channel_key,
    compute_stats,
    histogram_percentiles,
    reference_stats,
)


def test_hand_computed_statistics():
    stats = ChannelStats.from_histogram(np.bincount([1, 2, 3, 4], minlength=65536), percentiles=(0, 25, 50, 100))
    assert (stats.min, stats.max, stats.count) == (1.0, 4.0, 4)
    assert stats.mean == 2.5 and stats.std == pytest.approx(np.sqrt(1.25), rel=1e-15)
    # linear interpolation at virtual index (n-1)q: 0.75 between 1 and 2, 1.5 between 2 and 3
    assert stats.percentiles == {0.0: 1.0, 25.0: 1.75, 50.0: 2.5, 100.0: 4.0}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 65535), min_size=1, max_size=300),
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=8),
)
def test_histogram_percentiles_equal_numpy(values: list[int], q: list[float]):
    data = np.asarray(values, dtype=np.uint16)
    got = histogram_percentiles(np.bincount(data, minlength=65536), q)
    np.testing.assert_array_equal(got, np.percentile(data, q))


@pytest.mark.parametrize("n", [2, 9, 10_001])
def test_histogram_percentiles_equal_numpy_on_skewed_data(n: int):
    rng = np.random.default_rng(n)
    data = np.minimum(rng.gamma(0.7, 900.0, n), 65535).astype(np.uint16)
    q = np.array(PERCENTILES)
    np.testing.assert_array_equal(histogram_percentiles(np.bincount(data, minlength=65536), q), np.percentile(data, q))


def test_empty_histogram_is_refused():
    with pytest.raises(ValueError, match="empty"):
        histogram_percentiles(np.zeros(65536, np.int64), [50])


def _all_pixels(fields, key: str) -> np.ndarray:
    if key.startswith("C04"):
        plane = BRIGHTFIELD_KEYS.index(key)
        return np.concatenate([f.read_brightfield()[plane].ravel() for f in fields])
    target = {"C01": "nuclei", "C02": "lipids", "C03": "cytoplasm"}[key]
    return np.concatenate([f.read_target(target).ravel() for f in fields if target in f.targets])


def test_plate_stats_equal_numpy_on_the_concatenated_data(tmp_path: Path):
    make_plate(tmp_path / "p", wells=("B03", "C02"), fields=2, shape=(12, 10))
    make_plate(tmp_path / "p", magnification="40x", wells=("D04",), fields=3, shape=(8, 8), targets=(2,), seed=3)
    fields = index_plate(tmp_path / "p").fields
    stats = compute_stats(fields)
    assert set(stats.channels["20x"]) == {*BRIGHTFIELD_KEYS, "C01", "C02", "C03"}
    assert set(stats.channels["40x"]) == {*BRIGHTFIELD_KEYS, "C02"}
    assert stats.source["fields"] == {"20x": 4, "40x": 3}
    for mag, per_channel in stats.channels.items():
        chosen = [f for f in fields if f.magnification == mag]
        for key, s in per_channel.items():
            data = _all_pixels(chosen, key)
            assert s.count == data.size
            assert (s.min, s.max) == (data.min(), data.max())
            assert s.mean == pytest.approx(data.mean(), rel=1e-13)
            assert s.std == pytest.approx(data.std(), rel=1e-12)
            expected = np.percentile(data, PERCENTILES)
            assert [s.percentile(q) for q in PERCENTILES] == expected.tolist()


def test_stats_describe_only_the_chosen_fields(plate: Path):
    fields = index_plate(plate).fields
    train = [f for f in fields if f.well != "B03"]
    stats = compute_stats(iter(train), source={"subset": "train"})  # any iterable, read once
    data = _all_pixels(train, "C04Z04")
    assert stats.get("20x", "C04Z04").max == data.max()
    assert stats.get("20x", "C04Z04").mean == pytest.approx(data.mean(), rel=1e-13)
    assert stats.source == {"subset": "train", "fields": {"20x": 2}}
    with pytest.raises(VstainError, match="empty selection"):
        compute_stats([])


def test_json_round_trip_is_exact(plate: Path, tmp_path: Path):
    stats = compute_stats(index_plate(plate).fields, source={"plate": str(plate)})
    path = stats.save(tmp_path / "out" / "stats.json")
    again = PlateStats.load(path)
    assert again == stats
    text = json.loads(path.read_text())
    assert list(text["stats"]["20x"])[:2] == ["C04Z01", "C04Z02"]
    assert "99.99" in text["stats"]["20x"]["C01"]["percentiles"]
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary left behind


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such statistics file"),
        ("{not json", "not valid JSON"),
        ('{"format": "something else"}', "not a vstain statistics file"),
        ('{"format": "vstain.plate_stats", "stats": {"20x": {"C09": {"min": 0, "max": 1}}}}',
         "unknown channel key 'C09'"),
        ('{"format": "vstain.plate_stats", "stats": {"20x": {"C01": {"max": 1}}}}', "malformed"),
    ],
)
def test_bad_statistics_files_name_the_file(tmp_path: Path, content: str | None, message: str):
    path = tmp_path / "stats.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(VstainError, match=message) as info:
        PlateStats.load(path)
    assert str(path) in str(info.value)


def test_channel_keys_and_lookups():
    assert channel_key("nuclei") == "C01" and channel_key("C02Z01") == "C02" and channel_key("C04Z07") == "C04Z07"
    with pytest.raises(VstainError, match="unknown channel key"):
        channel_key("C04Z08")
    ref = reference_stats()
    assert ref.get("20x", "cytoplasm") == ChannelStats(min=45.0, max=65535.0)
    with pytest.raises(VstainError, match="no statistics for 30x"):
        ref.get("30x", "C01")
    with pytest.raises(VstainError, match="percentile 99.99 was not computed"):
        ref.get("20x", "C01").percentile(99.99)


def test_reference_table_uses_the_csv_values():
    ref = reference_stats()
    assert ref.get("20x", "C04Z02").min == 185 and ref.get("20x", "C04Z05").max == 19280
    assert [ref.get("60x", k).min for k in BRIGHTFIELD_KEYS] == [0, 0, 0, 0, 0, 0, 11]
    assert ref.get("40x", "lipids").max == 2633
