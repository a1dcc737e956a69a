"""Baselines: the mean image is the training mean, the linear fit recovers linear stains exactly,
predictions are rounded/clipped uint16 and written under the CV7000 target names."""

import numpy as np
import pytest
from scipy import ndimage

from vstain.errors import VstainError
from vstain.evaluation.baselines import (
    LinearBaseline,
    MeanImageBaseline,
    brightfield_features,
    to_uint16,
    write_baseline_predictions,
)
from vstain.plate.index import index_plate
from vstain.plate.tiff import read_tiff


def _stack(rng, shape=(40, 48)):
    return rng.integers(1000, 30000, size=(7, *shape)).astype(np.uint16)


def test_mean_image_is_the_training_mean():
    rng = np.random.default_rng(0)
    fields = [{"nuclei": rng.integers(0, 5000, (16, 20)).astype(np.uint16),
               "lipids": rng.integers(0, 5000, (16, 20)).astype(np.uint16)} for _ in range(3)]
    baseline = MeanImageBaseline.fit(fields)
    for name in ("nuclei", "lipids"):
        expected = np.mean([f[name].astype(np.float64) for f in fields], axis=0)
        np.testing.assert_array_equal(baseline.images[name], expected)
        predicted = baseline.predict(np.zeros((7, 16, 20)))[name]
        assert predicted.dtype == np.uint16
        np.testing.assert_array_equal(predicted, np.clip(np.rint(expected), 0, 65535).astype(np.uint16))


def test_mean_image_by_hand():
    fields = [{"nuclei": np.array([[1, 2]], np.uint16)}, {"nuclei": np.array([[4, 3]], np.uint16)}]
    baseline = MeanImageBaseline.fit(fields)
    np.testing.assert_array_equal(baseline.images["nuclei"], [[2.5, 2.5]])
    # numpy rounds half to even: 2.5 -> 2
    np.testing.assert_array_equal(baseline.predict()["nuclei"], [[2, 2]])


def test_mean_image_rejects_mixed_sizes_and_nothing():
    with pytest.raises(VstainError, match="one size"):
        MeanImageBaseline.fit([{"nuclei": np.zeros((4, 4))}, {"nuclei": np.zeros((4, 5))}])
    with pytest.raises(VstainError, match="at least one"):
        MeanImageBaseline.fit([])
    with pytest.raises(VstainError, match="field is"):
        MeanImageBaseline.fit([{"nuclei": np.zeros((4, 4))}]).predict(np.zeros((7, 5, 5)))


def test_features_are_planes_and_their_smoothed_copy():
    rng = np.random.default_rng(1)
    stack = _stack(rng, (20, 24))
    features = brightfield_features(stack, sigma=2.0)
    assert features.shape == (14, 20, 24)
    np.testing.assert_array_equal(features[:7], stack.astype(np.float64))
    np.testing.assert_allclose(features[10], ndimage.gaussian_filter(stack[3].astype(np.float64), 2.0, mode="reflect"))
    assert brightfield_features(stack, sigma=0).shape == (7, 20, 24)


def test_linear_baseline_recovers_a_linear_stain_exactly():
    rng = np.random.default_rng(2)
    weights = rng.normal(0, 0.05, size=14)
    stacks = [_stack(rng) for _ in range(3)]

    def stain(stack):
        return np.tensordot(weights, brightfield_features(stack, sigma=2.0), axes=1) + 3000.0

    baseline = LinearBaseline.fit(((s, {"cytoplasm": stain(s)}) for s in stacks), pixels_per_field=500, seed=0)
    np.testing.assert_allclose(baseline.coefficients["cytoplasm"], weights, rtol=1e-6, atol=1e-9)
    assert baseline.intercepts["cytoplasm"] == pytest.approx(3000.0, rel=1e-6)
    unseen = _stack(rng)
    np.testing.assert_allclose(baseline.predict_float(unseen)["cytoplasm"], stain(unseen), rtol=1e-7, atol=1e-4)


def test_linear_baseline_is_seeded():
    rng = np.random.default_rng(3)
    pairs = [(_stack(rng), {"nuclei": rng.integers(0, 9000, (40, 48)).astype(np.uint16)}) for _ in range(2)]
    a = LinearBaseline.fit(pairs, pixels_per_field=300, seed=5)
    b = LinearBaseline.fit(pairs, pixels_per_field=300, seed=5)
    c = LinearBaseline.fit(pairs, pixels_per_field=300, seed=6)
    np.testing.assert_array_equal(a.coefficients["nuclei"], b.coefficients["nuclei"])
    assert not np.array_equal(a.coefficients["nuclei"], c.coefficients["nuclei"])


def test_linear_predictions_are_rounded_and_clipped_uint16():
    stack = np.zeros((7, 3, 3))
    for intercept, expected in ((-12.0, 0), (70000.0, 65535), (10.6, 11), (10.4, 10)):
        baseline = LinearBaseline(coefficients={"lipids": np.zeros(14)}, intercepts={"lipids": intercept})
        image = baseline.predict(stack)["lipids"]
        assert image.dtype == np.uint16
        assert np.all(image == expected)
    np.testing.assert_array_equal(to_uint16(np.array([np.nan, -0.4, 1.5, 65535.6])), [0, 0, 2, 65535])


def test_linear_baseline_rejects_wrong_feature_count():
    baseline = LinearBaseline(coefficients={"lipids": np.zeros(14)}, intercepts={"lipids": 0.0}, sigma=0)
    with pytest.raises(VstainError, match="14 features"):
        baseline.predict(np.zeros((7, 4, 4)))


def test_predictions_written_under_target_names(tmp_path):
    from vstain.synth.plate import generate_plate

    generate_plate(tmp_path / "plate", wells=1, fields=2, seed=0, size=(64, 64))
    fields = index_plate(tmp_path / "plate", magnification="20x").fields
    targets = ("nuclei", "lipids", "cytoplasm")
    baseline = MeanImageBaseline.fit({t: f.read_target(t) for t in targets} for f in fields[:1])
    written = write_baseline_predictions(baseline, fields[1:], tmp_path / "pred")
    assert sorted(p.name for p in written) == sorted(fields[1].target_filename(t) for t in targets)
    np.testing.assert_array_equal(read_tiff(tmp_path / "pred" / fields[1].target_filename("lipids")),
                                  to_uint16(fields[0].read_target("lipids")))
