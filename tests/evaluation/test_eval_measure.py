"""MeasureObjectSizeShape / MeasureObjectIntensity equivalents and per-image aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import perimeter as skimage_perimeter, regionprops_table

from vstain.evaluation.measure import aggregate, intensity, measure_objects, perimeters, size_shape


def ellipse(shape, centre, a, b):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) / b) ** 2 + ((xx - centre[1]) / a) ** 2 <= 1


@pytest.mark.parametrize("radius", [10, 25])
def test_disk_shape_features_against_closed_form(radius):
    labels = ellipse((2 * radius + 9, 2 * radius + 9), (radius + 4, radius + 4), radius, radius).astype(np.int32)
    row = size_shape(labels).loc[1]
    assert row["AreaShape_Area"] == labels.sum()
    assert row["AreaShape_Area"] == pytest.approx(np.pi * radius**2, rel=0.02)
    # scikit-image's weighted boundary count overestimates a digital circle by ~5%.
    assert row["AreaShape_Perimeter"] == pytest.approx(2 * np.pi * radius, rel=0.06)
    assert row["AreaShape_FormFactor"] == pytest.approx(1.0, abs=0.1)
    assert row["AreaShape_Compactness"] == pytest.approx(1 / row["AreaShape_FormFactor"])
    # Mean distance to the edge over a disk is r/3 (pixel centres add up to half a pixel).
    assert row["AreaShape_MeanRadius"] == pytest.approx(radius / 3, abs=0.6)
    assert 0.9 < row["AreaShape_Solidity"] <= 1.0


def test_ellipse_shape_features_against_closed_form():
    a, b = 30, 12
    labels = ellipse((40, 80), (20, 40), a, b).astype(np.int32)
    row = size_shape(labels).loc[1]
    h = ((a - b) / (a + b)) ** 2
    ramanujan = np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))
    assert row["AreaShape_Area"] == pytest.approx(np.pi * a * b, rel=0.02)
    assert row["AreaShape_Perimeter"] == pytest.approx(ramanujan, rel=0.06)
    assert row["AreaShape_FormFactor"] == pytest.approx(4 * np.pi * np.pi * a * b / ramanujan**2, rel=0.12)


def test_square_and_single_pixel_exact_values():
    labels = np.zeros((7, 9), np.int32)
    labels[1:4, 1:4] = 1
    labels[5, 7] = 2
    table = size_shape(labels)
    square, dot = table.loc[1], table.loc[2]
    assert square["AreaShape_Area"] == 9 and square["AreaShape_Perimeter"] == 8
    assert square["AreaShape_FormFactor"] == pytest.approx(4 * np.pi * 9 / 64)
    assert square["AreaShape_Solidity"] == 1.0
    assert square["AreaShape_MeanRadius"] == pytest.approx(10 / 9)  # eight edge pixels at 1, centre at 2
    assert dot["AreaShape_Area"] == 1 and dot["AreaShape_Perimeter"] == 0
    assert dot["AreaShape_Compactness"] == 0 and np.isinf(dot["AreaShape_FormFactor"])


def test_vectorised_perimeter_equals_scikit_image_on_touching_objects():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (60, 70)).astype(np.int32)
    labels = np.kron(labels, np.ones((3, 3), np.int32))[:90, :100]
    labels[labels > 0] += (np.arange(labels.size).reshape(labels.shape)[labels > 0] // 700) * 3
    expected = [skimage_perimeter(labels == k, 4) for k in range(1, labels.max() + 1)]
    np.testing.assert_allclose(perimeters(labels), expected, atol=1e-9)
    props = regionprops_table(labels, properties=("label", "solidity"))
    np.testing.assert_allclose(size_shape(labels).loc[props["label"], "AreaShape_Solidity"], props["solidity"])


def test_intensity_on_constant_and_two_level_images():
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, 0:3] = 1
    labels[3:6, 3:6] = 2
    table = intensity(labels, np.full((6, 6), 0.25, np.float32), "Bodipy")
    np.testing.assert_allclose(table["Intensity_IntegratedIntensity_Bodipy"], [6 * 0.25, 9 * 0.25])
    np.testing.assert_allclose(table["Intensity_MeanIntensity_Bodipy"], [0.25, 0.25])
    np.testing.assert_allclose(table["Intensity_StdIntensity_Bodipy"], [0, 0], atol=1e-12)
    image = np.zeros((6, 6))
    image[0, 0:3] = 1.0  # object 1: three 1s and three 0s → mean 0.5, population std 0.5
    table = intensity(labels, image, "Hoechst")
    assert table.loc[1, "Intensity_MeanIntensity_Hoechst"] == 0.5
    assert table.loc[1, "Intensity_StdIntensity_Hoechst"] == 0.5
    assert table.loc[1, "Intensity_IntegratedIntensity_Hoechst"] == 3.0


def test_missing_labels_give_nan_rows_and_objects_are_numbered_from_one():
    labels = np.zeros((5, 5), np.int32)
    labels[1:3, 1:3] = 3
    table = measure_objects(labels, {"Hoechst": np.ones((5, 5))})
    assert list(table.index) == [1, 2, 3]
    assert table.loc[[1, 2]].isna().all().all() and table.loc[3, "AreaShape_Area"] == 4


def test_aggregate_is_mean_and_population_std_over_finite_values():
    table = pd.DataFrame({"AreaShape_Area": [1.0, 3.0, np.nan], "AreaShape_FormFactor": [np.inf, 2.0, 4.0]})
    out = aggregate(table, "cells_no_edge")
    assert out["Mean_cells_no_edge_AreaShape_Area"] == 2.0
    assert out["StDev_cells_no_edge_AreaShape_Area"] == 1.0  # ddof = 0
    assert out["Mean_cells_no_edge_AreaShape_FormFactor"] == 3.0
    empty = aggregate(table.iloc[:0], "cells_no_edge")
    assert all(np.isnan(v) for v in empty.values()) and len(empty) == 4


def test_mean_radius_equals_cellprofilers_per_object_definition():
    import scipy.ndimage as ndi
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(5)
    seeds = np.zeros((80, 90), np.int32)
    seeds[rng.integers(0, 80, 25), rng.integers(0, 90, 25)] = np.arange(1, 26)
    labels = expand_labels(seeds, 4)  # a mix of isolated and touching objects, some on the edge
    labels[labels % 4 == 0] = 0
    table = size_shape(labels)
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            assert np.isnan(table.loc[k, "AreaShape_MeanRadius"])
            continue
        obj = np.pad(labels[box] == k, 1)  # CellProfiler: bbox crop padded by 1 px
        expected = ndi.distance_transform_edt(obj)[obj].mean()
        assert table.loc[k, "AreaShape_MeanRadius"] == pytest.approx(expected, abs=1e-12)
