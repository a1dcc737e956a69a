"""The challenge metric against hand-computed values, and every crash case of the official notebook."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from vstain.errors import VstainError
from vstain.evaluation.metric import (
    ChallengeScore,
    FeaturewiseResult,
    PixelErrorAccumulator,
    PixelwiseResult,
    dominance_note,
    featurewise_score,
    histogram_median,
    pixelwise_score,
    scores_to_dict,
    total_score,
    write_scores,
)


def table(rows: dict[tuple[str, str], dict[str, float]]) -> pd.DataFrame:
    """A CellProfiler-style image table from ``{(well, fov): {feature: value}}``."""
    records = [
        {"ImageNumber": i + 1, "Metadata_FoV": fov, "Metadata_Well": well, **values}
        for i, ((well, fov), values) in enumerate(rows.items())
    ]
    return pd.DataFrame(records)


TRUTH = {
    ("D02", "F001"): {"A": 2.0, "B": 10.0},
    ("D02", "F002"): {"A": 4.0, "B": 20.0},
    ("D03", "F001"): {"A": 6.0, "B": 30.0},
}
PRED = {
    ("D02", "F001"): {"A": 3.0, "B": 10.0},
    ("D02", "F002"): {"A": 4.0, "B": 25.0},
    ("D03", "F001"): {"A": 3.0, "B": 30.0},
}
# Medians over fields: A = 4, B = 20.
# A: |3-2|/4 = 0.25, |4-4|/4 = 0, |3-6|/4 = 0.75  -> mean 1/3
# B: 0, |25-20|/20 = 0.25, 0                        -> mean 1/12
# featurewise = (1/3 + 1/12) / 2 = 5/24
FEATUREWISE = 5 / 24


def u16(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint16)


# Two 2x2 fields.
# C01: field 1 |errors| 1,0,0,2; field 2 |errors| 0,0,0,4 -> MAE 7/8; pooled truth 1..8 -> median 4.5
#      relative 0.875 / 4.5 = 7/36
# C02: truth 10 everywhere, prediction 12 -> MAE 2, median 10 -> 0.2
# C03: prediction = truth -> 0 (pooled median of four 100s and four 300s = 200)
# pixelwise = (7/36 + 0.2 + 0) / 3
PIXEL_FIELDS = [
    (
        {"C01": u16([[1, 2], [3, 4]]), "C02": u16([[10, 10], [10, 10]]), "C03": u16([[100, 100], [100, 100]])},
        {"C01": u16([[2, 2], [3, 2]]), "C02": u16([[12, 12], [12, 12]]), "C03": u16([[100, 100], [100, 100]])},
    ),
    (
        {"C01": u16([[5, 6], [7, 8]]), "C02": u16([[10, 10], [10, 10]]), "C03": u16([[300, 300], [300, 300]])},
        {"C01": u16([[5, 6], [7, 12]]), "C02": u16([[12, 12], [12, 12]]), "C03": u16([[300, 300], [300, 300]])},
    ),
]
PIXELWISE = (7 / 36 + 0.2 + 0.0) / 3


@pytest.mark.parametrize("size", [1, 2, 7, 10, 1001])
def test_histogram_median_equals_numpy_median(size):
    rng = np.random.default_rng(size)
    values = rng.integers(0, 65536, size, dtype=np.uint16)
    counts = np.bincount(values, minlength=65536)
    assert histogram_median(counts) == np.median(values)


def test_histogram_median_of_even_count_averages_the_middle_pair():
    counts = np.bincount(u16([3, 1, 10, 4]), minlength=65536)
    assert histogram_median(counts) == 3.5
    assert math.isnan(histogram_median(np.zeros(65536, np.int64)))


def test_pixelwise_matches_hand_computation():
    result = pixelwise_score(PIXEL_FIELDS)
    assert result.per_channel["C01"] == pytest.approx(7 / 36)
    assert result.per_channel["C02"] == pytest.approx(0.2)
    assert result.per_channel["C03"] == 0.0
    assert result.target_median == {"C01": 4.5, "C02": 10.0, "C03": 200.0}
    assert result.value == pytest.approx(PIXELWISE)
    assert result.n_fields == 2


def test_pixelwise_streaming_equals_pooled_numpy_on_random_fields():
    rng = np.random.default_rng(0)
    accumulator = PixelErrorAccumulator(["C01"])
    truths, preds = [], []
    for _ in range(3):
        t = rng.integers(0, 4000, (16, 24), dtype=np.uint16)
        p = rng.integers(0, 4000, (16, 24), dtype=np.uint16)
        truths.append(t)
        preds.append(p)
        accumulator.add({"C01": t}, {"C01": p})
    t_all = np.concatenate([t.ravel() for t in truths]).astype(np.float64)
    p_all = np.concatenate([p.ravel() for p in preds]).astype(np.float64)
    expected = np.mean(np.abs(t_all - p_all)) / np.median(t_all)
    assert accumulator.result().per_channel["C01"] == pytest.approx(expected, rel=1e-12)


def test_pixelwise_zero_median_channel_is_excluded_with_reason():
    zeros = u16(np.zeros((2, 2)))
    truth = {"C01": zeros, "C02": u16([[4, 4], [4, 4]])}
    pred = {"C01": u16([[1, 0], [0, 0]]), "C02": u16([[5, 5], [5, 5]])}
    fields = [(truth, pred)]
    result = pixelwise_score(fields, channels=("C01", "C02"))
    assert "C01" in result.excluded_channels and "0" in result.excluded_channels["C01"]
    assert result.value == pytest.approx(1 / 4)  # only C02: MAE 1 / median 4


def test_pixelwise_refuses_mismatched_shapes_naming_the_field():
    with pytest.raises(ValueError, match="D02 F001: C01"):
        PixelErrorAccumulator(["C01"]).add(
            {"C01": u16(np.zeros((2, 2)))}, {"C01": u16(np.zeros((2, 3)))}, label="D02 F001"
        )


def test_featurewise_matches_hand_computation():
    result = featurewise_score(table(TRUTH), table(PRED))
    assert result.per_feature == pytest.approx({"A": 1 / 3, "B": 1 / 12})
    assert result.target_median == {"A": 4.0, "B": 20.0}
    assert result.value == pytest.approx(FEATUREWISE)
    assert result.n_fields == 3
    assert not (result.excluded_features or result.skipped_target_entries or result.prediction_counted_as_zero)


def test_rows_are_matched_by_field_not_by_position():
    pred = dict(PRED)
    pred[("E05", "F009")] = {"A": 1e6, "B": 1e6}  # extra prediction: left out
    shuffled = dict(reversed(list(pred.items())))
    truth = dict(TRUTH)
    truth[("B02", "F004")] = {"A": 100.0, "B": 100.0}  # no prediction: left out
    result = featurewise_score(table(truth), table(shuffled))
    assert result.missing_predictions == ["B02 F004"]
    assert result.extra_predictions == ["E05 F009"]
    assert set(result.matched_fields) == {"D02 F001", "D02 F002", "D03 F001"}
    # the medians and errors are those of the three matched fields only
    assert result.value == pytest.approx(FEATUREWISE)


def test_duplicate_field_in_a_table_is_refused():
    truth = table(TRUTH)
    with pytest.raises(VstainError, match="D02 F001 more than once"):
        featurewise_score(pd.concat([truth, truth.iloc[:1]]), table(PRED))


def test_nan_target_entry_is_skipped_and_listed():
    truth = {k: dict(v) for k, v in TRUTH.items()}
    truth[("D02", "F002")]["A"] = math.nan  # no objects in that field
    result = featurewise_score(table(truth), table(PRED))
    # median of A over finite targets {2, 6} = 4; errors |3-2|/4, |3-6|/4 -> mean 0.5
    assert result.per_feature["A"] == pytest.approx(0.5)
    assert result.skipped_target_entries == {"A": ["D02 F002"]}


def test_nan_prediction_counts_as_zero_and_is_listed():
    pred = {k: dict(v) for k, v in PRED.items()}
    pred[("D03", "F001")]["B"] = math.nan  # failed segmentation
    result = featurewise_score(table(TRUTH), table(pred))
    # B: 0, 5/20, |0 - 30|/20 = 1.5 -> mean 1.75/3
    assert result.per_feature["B"] == pytest.approx(1.75 / 3)
    assert result.prediction_counted_as_zero == {"B": ["D03 F001"]}


def test_infinite_prediction_counts_as_zero_and_infinite_target_is_skipped():
    pred = {k: dict(v) for k, v in PRED.items()}
    pred[("D02", "F001")]["A"] = math.inf
    truth = {k: dict(v) for k, v in TRUTH.items()}
    truth[("D03", "F001")]["B"] = -math.inf
    result = featurewise_score(table(truth), table(pred))
    # A: |0-2|/4, 0, |3-6|/4 -> mean (0.5 + 0.75)/3
    assert result.per_feature["A"] == pytest.approx(1.25 / 3)
    # B: finite targets {10, 20}, median 15: |10-10|/15, |25-20|/15 -> mean 1/6
    assert result.per_feature["B"] == pytest.approx(1 / 6)
    assert result.prediction_counted_as_zero == {"A": ["D02 F001"]}
    assert result.skipped_target_entries == {"B": ["D03 F001"]}
    assert math.isfinite(result.value)


def test_zero_median_and_all_nan_features_are_excluded_with_reason():
    truth = {k: {**v, "Count_Defective": c, "Empty": math.nan} for (k, v), c in zip(TRUTH.items(), [0.0, 0.0, 3.0])}
    pred = {k: {**v, "Count_Defective": 1.0, "Empty": 5.0} for k, v in PRED.items()}
    result = featurewise_score(table(truth), table(pred))
    assert result.excluded_features["Count_Defective"] == "target median over fields is 0"
    assert "no finite target" in result.excluded_features["Empty"]
    assert result.value == pytest.approx(FEATUREWISE)  # only A and B count


def test_challenge_score_total_and_json(tmp_path):
    fw = featurewise_score(table(TRUTH), table(PRED))
    pw = pixelwise_score(PIXEL_FIELDS)
    s20 = ChallengeScore("20x", pw, fw, warnings=("truth: D02 F001: window clamped",))
    assert s20.score == pytest.approx((FEATUREWISE + PIXELWISE) / 2)
    one_field = FeaturewiseResult({"A": 0.5}, {"A": 1.0}, {}, {}, {}, ["D02 F001"], [], [])
    s40 = ChallengeScore("40x", PixelwiseResult({"C01": 0.3}, {"C01": 1.0}, {"C01": 0.3}, {}, 1), one_field)
    assert s40.score == pytest.approx(0.4)
    # weighted by field count: (3 * s20 + 1 * 0.4) / 4
    assert total_score([s20, s40]) == pytest.approx((3 * s20.score + 0.4) / 4)

    path = write_scores(tmp_path / "scores.json", [s20, s40])
    data = json.loads(path.read_text())
    assert data["total"] == pytest.approx(total_score([s20, s40]))
    entry = data["20x"]
    assert entry["n_fields"] == 3
    assert entry["pixelwise"] == pytest.approx(PIXELWISE)
    assert entry["featurewise"] == pytest.approx(FEATUREWISE)
    assert entry["pixelwise_per_channel"]["C01"] == pytest.approx(7 / 36)
    assert entry["featurewise_per_feature"] == pytest.approx({"A": 1 / 3, "B": 1 / 12})
    assert entry["warnings"] == ["truth: D02 F001: window clamped"]
    for key in ("excluded_features", "missing_predictions", "extra_predictions", "prediction_counted_as_zero"):
        assert key in entry
    assert "policy" in data
    assert not list(tmp_path.glob(".*part"))  # atomic write left no temporary file


def test_json_writes_nan_as_null():
    empty = FeaturewiseResult(
        {"A": math.nan}, {"A": 0.0}, {"A": "target median over fields is 0"}, {}, {}, ["D02 F001"], [], []
    )
    score = ChallengeScore("60x", PixelwiseResult({"C01": 0.1}, {"C01": 1.0}, {"C01": 0.1}, {}, 1), empty)
    data = scores_to_dict([score])
    assert data["60x"]["featurewise"] is None and data["60x"]["score"] is None
    assert data["total"] is None
    json.dumps(data, allow_nan=False)


def featurewise_result(errors: dict[str, float], excluded: dict[str, str] | None = None) -> FeaturewiseResult:
    medians = {name: 0.5 for name in errors}
    return FeaturewiseResult(per_feature=errors, target_median=medians, excluded_features=excluded or {},
                             skipped_target_entries={}, prediction_counted_as_zero={}, matched_fields=["D02 F001"],
                             missing_predictions=[], extra_predictions=[])


def test_largest_features_come_first_without_excluded_or_non_finite_ones():
    fw = featurewise_result({"a": 1.0, "b": 3.0, "c": math.nan, "d": 2.0, "e": 9.0}, excluded={"e": "target median 0"})
    assert fw.largest() == [("b", 3.0), ("d", 2.0), ("a", 1.0)]
    assert fw.largest(2) == [("b", 3.0), ("d", 2.0)]


def test_a_featurewise_error_carried_by_three_features_is_named_and_a_spread_one_is_not():
    # 4 + 2 + 1 = 7 of 9: the three largest carry 78 %, more than half.
    errors = {"a": 4.0, "b": 2.0, "c": 1.0, "d": 0.5, "e": 0.5, "f": 0.5, "g": 0.5, "h": 0.0}
    fw = featurewise_result(errors)
    assert fw.dominated_by() == [("a", 4.0), ("b", 2.0), ("c", 1.0)]
    assert dominance_note(fw).startswith(
        "78% of the featurewise error comes from 3 of 8 features: a 4 (target median 0.5), b 2 (target median 0.5), "
        "c 1 (target median 0.5); ")
    # The same three features at 3 of 8 equal errors (37.5 %) are not called dominant.
    even = featurewise_result(dict.fromkeys(errors, 1.0))
    assert even.dominated_by() == [] and dominance_note(even) is None
    # Exactly half is enough (3 of 6 equal errors); 3 of 7 (43 %) is not.
    assert len(featurewise_result(dict.fromkeys("abcdef", 1.0)).dominated_by()) == 3
    assert featurewise_result(dict.fromkeys("abcdefg", 1.0)).dominated_by() == []
    # Too few scored features (fewer than twice three) or nothing to share: never dominant.
    assert featurewise_result({"a": 9.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 1.0}).dominated_by() == []
    assert featurewise_result(dict.fromkeys("abcdefg", 0.0)).dominated_by() == []
    # Features without error are not named among the ones it rests on.
    assert featurewise_result({"a": 5.0, **dict.fromkeys("bcdefg", 0.0)}).dominated_by() == [("a", 5.0)]
