"""Intensity maps: exact quantile matching, validation of stored maps, applied by the predictor."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_bundles import bundle_metadata
from vstain.errors import BundleError
from vstain.inference.bundle import load_model, save_bundle
from vstain.inference.intensity_map import IntensityMap
from vstain.inference.predictor import Predictor


def test_fit_matches_quantiles_exactly_and_holds_the_ends():
    predicted = np.arange(101, dtype=float)  # 0..100, every quantile level hits a value exactly
    real = 2 * predicted + 10
    mapping = IntensityMap.fit([predicted[:50], predicted[50:]], [real[:50], real[50:]], levels=101)
    assert mapping.fields == 2
    np.testing.assert_allclose(mapping(np.array([0.0, 25.0, 50.0, 100.0])), [10, 60, 110, 210], atol=1e-3)
    assert mapping(np.array([-5.0]))[0] == 10 and mapping(np.array([400.0]))[0] == pytest.approx(210)


def test_fit_on_a_flat_background_is_a_non_decreasing_function():
    rng = np.random.default_rng(0)
    predicted = np.zeros(10_000)
    predicted[:300] = rng.uniform(200, 900, 300)  # dim blobs on an exactly flat background
    real = np.where(np.arange(10_000) < 300, 2500.0, 300.0) + rng.normal(0, 5, 10_000)
    mapping = IntensityMap.fit([predicted], [real])
    out = mapping(np.sort(predicted))
    assert np.all(np.isfinite(out)) and np.all(np.diff(out) >= 0)
    assert out[-1] > 2000 and abs(np.median(out) - 300) < 20  # blobs lifted to nucleus level, background kept
    assert IntensityMap.from_dict(mapping.to_dict()) == mapping  # survives JSON


@pytest.mark.parametrize("broken, message", [
    ({"predicted": [0, 1, 1], "target": [0, 1, 2]}, "must increase"),
    ({"predicted": [0, 1, 2], "target": [0, 3, 2]}, "must not decrease"),
    ({"predicted": [0, 1], "target": [0, 1, 2]}, "same length"),
    ({"predicted": [0, float("nan")], "target": [0, 1]}, "finite"),
    ({"target": [0, 1]}, "lists of numbers"),
])
def test_broken_maps_are_refused_in_one_line(broken, message):
    with pytest.raises(BundleError, match=message):
        IntensityMap.from_dict(broken, source="m.safetensors: intensity_map.lipids")


def test_bundle_validates_its_intensity_map(tmp_path, tiny_tiramisu):
    good = IntensityMap((0.0, 1000.0, 5000.0), (100.0, 2100.0, 9000.0)).to_dict()
    path = save_bundle(tmp_path / "m", tiny_tiramisu, {**bundle_metadata(), "intensity_map": {"lipids": good}})
    assert load_model(path).metadata.intensity_map == {"lipids": good}
    with pytest.raises(BundleError, match=r"intensity_map\.lipids: 'predicted' must increase"):
        save_bundle(tmp_path / "bad", tiny_tiramisu,
                    {**bundle_metadata(), "intensity_map": {"lipids": {"predicted": [1, 0], "target": [0, 1]}}})
    with pytest.raises(BundleError, match="intensity_map"):
        save_bundle(tmp_path / "other", tiny_tiramisu, {**bundle_metadata(), "intensity_map": {"nuclei": good}})


def test_predictor_maps_each_tta_variant_then_averages(tmp_path, tiny_tiramisu):
    rng = np.random.default_rng(1)
    brightfield = rng.integers(0, 1000, (7, 48, 40)).astype(np.uint16)
    plain = save_bundle(tmp_path / "plain", tiny_tiramisu, bundle_metadata())
    raw = Predictor([plain], tta=8).predict_variants(brightfield)["lipids"]
    # A convex map (doubling above the median): mean of mapped variants != map of the mean.
    middle = float(np.median(raw))
    stored = IntensityMap((0.0, middle, 65535.0), (0.0, middle, 2 * 65535.0 - middle)).to_dict()
    mapped_bundle = save_bundle(tmp_path / "mapped", tiny_tiramisu,
                                {**bundle_metadata(), "intensity_map": {"lipids": stored}})
    predictor = Predictor([mapped_bundle], tta=8, uncertainty=True)
    image, spread = predictor.predict_field(brightfield, return_uncertainty=True)
    variants = predictor.predict_variants(brightfield)["lipids"]
    mapping = IntensityMap.from_dict(stored)
    np.testing.assert_allclose(variants, mapping(raw), atol=1e-6)
    np.testing.assert_array_equal(image["lipids"], np.clip(np.rint(variants.mean(axis=0)), 0, 65535))
    np.testing.assert_array_equal(spread["lipids"], np.clip(np.rint(variants.std(axis=0)), 0, 65535))
    # intensity_map=False: the network's own levels, and the provenance says so.
    unmapped = Predictor([mapped_bundle], tta=8, intensity_map=False)
    np.testing.assert_array_equal(unmapped.predict_field(brightfield)["lipids"],
                                  Predictor([plain], tta=8).predict_field(brightfield)["lipids"])
    assert unmapped.provenance("20x", "lipids")["settings"]["intensity_map"] is False
    assert "intensity_map" not in predictor.provenance("20x", "lipids")["settings"]
