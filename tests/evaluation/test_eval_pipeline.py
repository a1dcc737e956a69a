"""measure_field end to end on a small committed field, and segment_nuclei."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.evaluation.nuclei import segment_nuclei
from vstain.evaluation.pipeline import composite_image, measure_field, to_cellprofiler_scale
from vstain.evaluation.settings import pipeline_settings

FIXTURES = Path(__file__).parent / "fixtures"


def read_field(magnification: str, field: int = 1) -> list[np.ndarray]:
    folder = FIXTURES / magnification
    return [
        tifffile.imread(folder / f"AssayPlate_Greiner_#655090_B02_T0001F{field:03d}L01A{c:02d}Z01C{c:02d}.tif")
        for c in (1, 2, 3)
    ]


@pytest.fixture(scope="module")
def measured():
    images = read_field("20x")
    return images, measure_field(*images, magnification="20x", threads=2)


def test_features_are_the_99_columns_in_cellprofiler_order(measured):
    _, result = measured
    assert list(result.features) == list(FEATURE_COLUMNS)
    assert len(result.features) == 99
    assert all(isinstance(v, float) for v in result.features.values())


def test_counts_objects_and_labels_agree(measured):
    images, result = measured
    f = result.features
    assert f["Count_nuclei"] >= f["Count_cells_no_edge"] > 0
    assert f["Count_nuclei_no_edge"] == f["Count_cells_no_edge"]
    assert result.labels["nuclei"].max() == f["Count_nuclei"]
    assert result.labels["cells"].max() == f["Count_cells_no_edge"]
    assert len(result.objects["cells_no_edge"]) == f["Count_cells_no_edge"]
    assert len(result.objects["nuclei_no_edge"]) == f["Count_nuclei_no_edge"]
    assert set(result.labels) >= {"nuclei", "cells", "lipids"}
    for labels in result.labels.values():
        assert labels.shape == images[0].shape
    # No kept cell touches the border, and each kept nucleus lies inside its own cell.
    cells, nuclei = result.labels["cells"], result.labels["nuclei_no_edge"]
    assert not np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]).any()
    inside = nuclei > 0
    assert (cells[inside] == nuclei[inside]).mean() > 0.99
    table = result.objects["cells_no_edge"]
    assert f["Mean_cells_no_edge_AreaShape_Area"] == pytest.approx(table["AreaShape_Area"].mean())
    assert f["StDev_cells_no_edge_AreaShape_Area"] == pytest.approx(table["AreaShape_Area"].std(ddof=0))


def test_intensities_are_on_cellprofilers_zero_one_scale(measured):
    images, result = measured
    hoechst = result.objects["nuclei_no_edge"]["Intensity_MeanIntensity_Hoechst"]
    assert (hoechst <= 0.04).all()  # module 11's cap on Nuclei_filtered
    assert 0 < result.features["Mean_cells_no_edge_Intensity_MeanIntensity_CellTrackerRed"] < 1
    scaled = to_cellprofiler_scale(images[0])
    assert scaled.dtype == np.float32 and scaled.max() == pytest.approx(images[0].max() / 65535)
    assert to_cellprofiler_scale(images[0], semantics="cp5").dtype == np.float64


def test_segment_nuclei_matches_the_pipelines_nuclei(measured):
    images, result = measured
    np.testing.assert_array_equal(segment_nuclei(images[0], magnification="20x"), result.labels["nuclei"])
    filtered = segment_nuclei(images[0], magnification="20x", filtered=True)
    np.testing.assert_array_equal(filtered, result.labels["nuclei_filtered"])


def test_composite_is_sum_at_20x_and_weighted_average_at_60x():
    b = np.array([[0.2, 0.7]], np.float32)
    c = np.array([[0.4, 0.6]], np.float32)
    np.testing.assert_allclose(composite_image(b, c, pipeline_settings("20x").cells), [[0.6, 1.0]])
    np.testing.assert_allclose(composite_image(b, c, pipeline_settings("60x").cells), [[0.35, 0.625]])


def test_small_field_clamps_adaptive_windows_and_warns():
    images = [im[:300, :300] for im in read_field("20x")]
    result = measure_field(*images, magnification="20x")
    clamped = [w for w in result.warnings if "IdentifySecondaryObjects" in w]
    assert len(clamped) == 1 and "185" in clamped[0] and "150" in clamped[0]
    assert list(result.features) == list(FEATURE_COLUMNS)


def test_mismatched_shapes_are_refused():
    images = read_field("20x")
    with pytest.raises(ValueError, match="one shape"):
        measure_field(images[0], images[1][:100], images[2], magnification="20x")


def test_threads_do_not_change_the_result(measured):
    images, threaded = measured
    serial = measure_field(*images, magnification="20x", threads=1)
    assert threaded.features.keys() == serial.features.keys()
    np.testing.assert_array_equal(list(threaded.features.values()), list(serial.features.values()))
    for name, table in serial.objects.items():
        pd.testing.assert_frame_equal(threaded.objects[name], table)
    for name, labels in serial.labels.items():
        np.testing.assert_array_equal(threaded.labels[name], labels)
    assert threaded.warnings == serial.warnings


def test_threads_must_be_positive():
    images = [im[:64, :64] for im in read_field("20x")]
    with pytest.raises(ValueError, match="threads must be at least 1"):
        measure_field(*images, magnification="20x", threads=0)


def test_two_threads_run_the_lipid_branch_beside_the_nuclei(monkeypatch):
    import threading

    import vstain.evaluation.pipeline as pipeline

    seen = {}
    for name in ("_lipids", "_nuclei_and_cells"):
        original = getattr(pipeline, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen[_name] = threading.current_thread().name
            return _original(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, spy)
    images = [im[:128, :128] for im in read_field("20x")]
    measure_field(*images, magnification="20x", threads=2)
    assert seen["_nuclei_and_cells"] == threading.current_thread().name
    assert seen["_lipids"].startswith("vstain-lipids")
    measure_field(*images, magnification="20x", threads=1)
    assert seen["_lipids"] == threading.current_thread().name
