"""IdentifyPrimaryObjects, FilterObjects and propagation with CellProfiler semantics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vstain.evaluation.objects import (
    declump_smoothing,
    filter_by_limits,
    identify_primary_objects,
    remove_border_objects,
)
from vstain.evaluation.secondary import propagate_cells, renumber_to_primary, seed_labels
from vstain.evaluation.settings import PIPELINES, pipeline_settings
from vstain.evaluation.threshold import ThresholdSettings

NUCLEI_20X = pipeline_settings("20x").nuclei


def disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def field(shape, disks, level=0.05, background=0.005):
    image = np.full(shape, background, np.float32)
    for centre, radius in disks:
        image[disk(shape, centre, radius)] = level
    return image


def test_settings_table_matches_spec_constants():
    assert pipeline_settings("60x").nuclei.diameter == (50, 200)
    assert pipeline_settings("40x").nuclei.threshold.lower == 0.01
    assert pipeline_settings("60x").nuclei.threshold.window == 93
    assert pipeline_settings("20x").cells.threshold.correction == 0.70
    assert pipeline_settings("60x").cells.composite_cytoplasm_weight == 3.0
    assert [PIPELINES[m].droplets.defect_offset for m in ("20x", "40x", "60x")] == [-0.3, -0.4, -0.5]
    assert pipeline_settings("40x").droplets.small.threshold.lower == 0.2
    assert pipeline_settings("20x").droplets.big.maxima_distance is None
    with pytest.raises(ValueError):
        pipeline_settings("10x")


def test_separate_disks_become_separate_objects():
    image = field((200, 200), [((50, 50), 15), ((140, 140), 20)])
    result = identify_primary_objects(image, settings=NUCLEI_20X)
    assert result.count == 2 and result.labels[50, 50] != result.labels[140, 140]
    # Without threshold smoothing the objects are exactly the drawn disks.
    sharp = replace(NUCLEI_20X, threshold=replace(NUCLEI_20X.threshold, smoothing_scale=0.0))
    result = identify_primary_objects(image, settings=sharp)
    areas = sorted(np.bincount(result.labels.ravel())[1:])
    assert areas == sorted([disk((200, 200), (50, 50), 15).sum(), disk((200, 200), (140, 140), 20).sum()])


def test_shape_declumping_splits_two_touching_disks():
    image = field((200, 200), [((100, 80), 18), ((100, 112), 18)])
    result = identify_primary_objects(image, settings=NUCLEI_20X)
    assert result.count == 2
    # The split runs near the waist between the two centres.
    assert result.labels[100, 80] != result.labels[100, 112]
    assert result.unedited_labels.max() >= 2


def test_size_filter_removes_objects_outside_the_diameter_range():
    # Dmin = 20 → area >= pi·100 ≈ 314; a radius-7 disk (~150 px) is discarded.
    image = field((200, 200), [((50, 50), 7), ((140, 140), 20)])
    kept = identify_primary_objects(image, settings=NUCLEI_20X)
    assert kept.count == 1 and kept.labels[140, 140] == 1 and kept.labels[50, 50] == 0
    assert kept.unedited_labels[50, 50] > 0  # the watershed output still holds it
    unfiltered = identify_primary_objects(image, settings=replace(NUCLEI_20X, discard_outside_diameter=False))
    assert unfiltered.count == 2


def test_holes_are_filled():
    image = field((200, 200), [((100, 100), 25)])
    image[disk((200, 200), (100, 100), 4)] = 0.005
    result = identify_primary_objects(image, settings=NUCLEI_20X)
    assert result.count == 1 and result.labels[100, 100] == 1


def test_declump_smoothing_keeps_constant_images_constant():
    image = np.full((30, 40), 0.3)
    np.testing.assert_allclose(declump_smoothing(image, 5.0), 0.3)


def test_intensity_declumping_splits_two_bright_droplets():
    yy, xx = np.mgrid[:80, :80]
    image = np.exp(-((yy - 40) ** 2 + (xx - 33) ** 2) / 18.0) + np.exp(-((yy - 40) ** 2 + (xx - 47) ** 2) / 18.0)
    settings = replace(
        pipeline_settings("20x").droplets.small,
        threshold=ThresholdSettings("global", 0, correction=1.0, lower=0.2, upper=1.0),
    )
    result = identify_primary_objects(image / image.max(), settings=settings)
    assert result.count == 2


def test_remove_border_objects_renumbers_and_relabels_additional_objects_alike():
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:2] = 1  # touches the edge
    labels[3:5, 3:5] = 2
    labels[6:8, 6:8] = 3
    labels[5:9, 9] = 4  # touches the right edge
    inner = np.zeros_like(labels)
    inner[3, 3], inner[6, 6], inner[0, 0] = 2, 3, 1
    kept, kept_inner = remove_border_objects(labels, inner)
    assert sorted(np.unique(kept)) == [0, 1, 2]
    assert kept[3, 3] == 1 and kept[6, 6] == 2 and kept[0, 0] == 0 and kept[5, 9] == 0
    assert kept_inner[3, 3] == 1 and kept_inner[6, 6] == 2 and kept_inner[0, 0] == 0


def test_filter_by_limits_nan_passes_and_bounds_are_inclusive():
    labels = np.array([[1, 2, 3, 4]], np.int32)
    values = np.array([0.5, np.nan, 2.0, 1.0])
    (kept,) = filter_by_limits(labels, [(values, 0.5, 1.0)])
    np.testing.assert_array_equal(kept, [[1, 2, 0, 3]])
    (kept,) = filter_by_limits(labels, [(values, None, 0.9), (np.array([1, 1, 1, 0]), 1, None)])
    np.testing.assert_array_equal(kept, [[1, 2, 0, 0]])


def test_propagation_splits_a_uniform_region_between_two_seeds():
    image = np.full((40, 60), 0.5)
    primary = np.zeros((40, 60), np.int32)
    primary[20, 15] = 1
    primary[20, 45] = 2
    settings = replace(
        pipeline_settings("20x").cells,
        threshold=ThresholdSettings("global", 0, correction=1.0, lower=0.0, upper=1.0),
    )
    cells = propagate_cells(image, primary, primary, settings=settings)
    assert set(np.unique(cells.labels)) == {1, 2}
    assert (cells.labels[:, :29] == 1).all() and (cells.labels[:, 31:] == 2).all()


def test_propagation_stops_at_the_threshold_mask_and_follows_intensity():
    image = np.zeros((40, 60))
    image[5:35, 5:55] = 0.5
    image[5:35, 30] = 0.9  # a bright ridge: crossing it is expensive
    primary = np.zeros((40, 60), np.int32)
    primary[20, 10] = 1
    primary[20, 50] = 2
    settings = replace(
        pipeline_settings("20x").cells,
        threshold=ThresholdSettings("global", 0, correction=1.0, lower=0.3, upper=1.0),
    )
    cells = propagate_cells(image, primary, primary, settings=settings)
    assert (cells.labels[image == 0] == 0).all()
    assert (cells.labels[5:35, 5:30] == 1).all() and (cells.labels[5:35, 31:55] == 2).all()


def test_seeds_keep_edge_objects_and_renumbering_drops_their_regions():
    unedited = np.zeros((10, 10), np.int32)
    unedited[0:2, 0:2] = 5  # rejected by the filter but touching the edge: still a seed
    unedited[4:6, 4:6] = 7  # kept (primary label 1)
    unedited[7:9, 1:3] = 9  # rejected, interior: removed
    primary = np.zeros_like(unedited)
    primary[4:6, 4:6] = 1
    seeds = seed_labels(unedited, primary)
    assert set(np.unique(seeds)) == {0, 5, 7}
    regions = np.where(np.arange(100).reshape(10, 10) % 10 < 3, 5, 7)
    renumbered = renumber_to_primary(regions, primary)
    assert set(np.unique(renumbered)) == {0, 1} and renumbered[0, 0] == 0 and renumbered[5, 5] == 1


def test_marker_watershed_labels_at_push_time_and_floods_plateaus_first_in_first_out():
    from vstain.evaluation.objects import marker_watershed

    # A ridge of 5 next to marker 1: marker 2 floods the low plateau and stops at the ridge.
    landscape = np.array([[0.0, 5.0, 1.0, 1.0, 1.0, 0.0]])
    markers = np.array([[1, 0, 0, 0, 0, 2]], np.int32)
    components = np.ones_like(markers)
    np.testing.assert_array_equal(marker_watershed(landscape, markers, components), [[1, 1, 2, 2, 2, 2]])
    # On a flat plateau two markers split the strip evenly (first in, first out).
    flat = np.zeros((1, 8))
    markers = np.array([[1, 0, 0, 0, 0, 0, 0, 2]], np.int32)
    np.testing.assert_array_equal(marker_watershed(flat, markers, np.ones_like(markers)), [[1, 1, 1, 1, 2, 2, 2, 2]])
    # A component with one marker becomes that marker's region; one without stays 0.
    components = np.array([[1, 1, 0, 2, 2, 2, 0, 3]])
    markers = np.array([[0, 7, 0, 0, 0, 0, 0, 0]], np.int32)
    np.testing.assert_array_equal(marker_watershed(flat, markers, components), [[7, 7, 0, 0, 0, 0, 0, 0]])
