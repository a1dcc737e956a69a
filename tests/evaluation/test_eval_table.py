"""Column names and order, triplet discovery and per-field tables (with an injected fake measurement)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.measure import label
from skimage.segmentation import expand_labels

from vstain.errors import PlateError
from vstain.evaluation.columns import FEATURE_COLUMNS, IMAGE_COLUMNS, METADATA_COLUMNS
from vstain.evaluation.table import FeatureTable, read_stains, target_fields
from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff


@dataclass
class FakeMeasurements:
    features: dict
    objects: dict
    labels: dict
    warnings: list = field(default_factory=list)


def fake_measure(nuclei, lipids, cytoplasm, *, magnification):
    """Cheap stand-in with measure_field's contract: features depend on the pixels."""
    nuclei_labels = label(nuclei > 1000)
    n = int(nuclei_labels.max())
    base = {"nuclei": float(nuclei.mean()), "lipids": float(lipids.mean()), "cytoplasm": float(cytoplasm.mean())}
    features = {name: base["lipids"] * (i + 1) / 100 for i, name in enumerate(FEATURE_COLUMNS)}
    features["Count_nuclei"] = float(n)
    features["Mean_nuclei_no_edge_Intensity_MeanIntensity_Hoechst"] = base["nuclei"] / 65535
    areas = np.bincount(nuclei_labels.ravel())[1:]
    objects = {"nuclei_no_edge": pd.DataFrame({"ObjectNumber": np.arange(1, n + 1), "AreaShape_Area": areas})}
    labels = {"nuclei": nuclei_labels, "cells": expand_labels(nuclei_labels, 3), "lipids": label(lipids > 1500)}
    return FakeMeasurements(features, objects, labels, [f"fake {magnification}"])


def write_field(
    folder: Path, well: str, fov: int, rng: np.random.Generator, *, channels=(1, 2, 3), shape=(48, 64)
) -> None:
    for channel in channels:
        image = rng.integers(200, 800, shape, dtype=np.uint16)
        if channel == 1:
            image[10:20, 10:20] = 2000
            image[30:36, 40:50] = 1800
        name = ImageName(plate="AssayPlate_Greiner_#655090", well=well, field=fov, channel=channel, action=channel)
        write_tiff(folder / format_name(name), image)


def test_columns_are_cellprofilers_102_sorted_names():
    assert len(IMAGE_COLUMNS) == 102 and len(set(IMAGE_COLUMNS)) == 102
    assert list(IMAGE_COLUMNS) == sorted(IMAGE_COLUMNS)  # Python's code-point sort, as CellProfiler
    assert IMAGE_COLUMNS[0] == "Count_Defective_lipid_droplets"
    assert IMAGE_COLUMNS[-1] == "StDev_nuclei_no_edge_Intensity_StdIntensity_Hoechst"
    # upper case sorts first; "Granularity_10" before "Granularity_1_"
    assert IMAGE_COLUMNS.index("Granularity_10_Bodipy") < IMAGE_COLUMNS.index("Granularity_1_Bodipy")
    lipids_area = IMAGE_COLUMNS.index("Mean_Lipids_no_edge_AreaShape_Area")
    assert lipids_area < IMAGE_COLUMNS.index("Mean_cells_no_edge_AreaShape_Area")
    assert METADATA_COLUMNS == ("ImageNumber", "Metadata_FoV", "Metadata_Well")
    assert len(FEATURE_COLUMNS) == 99
    assert sum(c.startswith("Granularity_") for c in FEATURE_COLUMNS) == 16
    assert sum(c.startswith(("Mean_", "StDev_")) for c in FEATURE_COLUMNS) == 78
    assert "Mean_cells_no_edge_Intensity_MeanIntensity_Hoechst" not in FEATURE_COLUMNS  # measured, not exported


def test_target_fields_flat_folder_ignores_brightfield_and_reports_incomplete(tmp_path):
    rng = np.random.default_rng(0)
    write_field(tmp_path, "D02", 7, rng)
    write_field(tmp_path, "B02", 2, rng)
    write_field(tmp_path, "B02", 3, rng, channels=(1, 2))  # C03 missing
    bf = ImageName(plate="AssayPlate_Greiner_#655090", well="D02", field=7, channel=4, action=4, z=3)
    write_tiff(tmp_path / format_name(bf), rng.integers(0, 9, (48, 64), dtype=np.uint16))
    (tmp_path / "notes.txt").write_text("not an image: not read")
    fields, warnings = target_fields(tmp_path, magnification="20x")
    assert [f.key for f in fields] == [("20x", "B02", 2), ("20x", "D02", 7)]
    assert set(fields[1].targets) == {"nuclei", "lipids", "cytoplasm"} and fields[1].brightfield == ()
    assert set(read_stains(fields[1])) == {"C01", "C02", "C03"}
    assert fields[1].target_filename("lipids") == fields[1].targets["lipids"].name
    (warning,) = warnings
    assert "field B02 F003 lacks C03 (cytoplasm); left out" in warning
    # a file the index cannot read as a CV7000 image is an error naming it, as for every command
    (tmp_path / "notes.tif").write_bytes(b"")
    with pytest.raises(PlateError, match="notes.tif: not a CV7000 image name"):
        target_fields(tmp_path, magnification="20x")


def test_target_fields_plate_layout_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    write_field(tmp_path / "plate" / "40x_images", "C04", 1, rng)
    fields, _ = target_fields(tmp_path / "plate", magnification="40x")
    assert [f.key for f in fields] == [("40x", "C04", 1)]
    with pytest.raises(PlateError, match="no 20x_images"):
        target_fields(tmp_path / "plate", magnification="20x")
    with pytest.raises(PlateError, match="nowhere: no such folder"):
        target_fields(tmp_path / "nowhere", magnification="20x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlateError, match="empty: no CV7000 images found"):
        target_fields(tmp_path / "empty", magnification="20x")
    write_field(tmp_path / "partial", "D02", 1, rng, channels=(1,))
    with pytest.raises(PlateError, match="partial: no C01/C02/C03 image triplets found for 20x"):
        target_fields(tmp_path / "partial", magnification="20x")


def test_target_fields_refuses_two_images_for_one_slot(tmp_path):
    rng = np.random.default_rng(2)
    write_field(tmp_path, "D02", 1, rng)
    copy = ImageName(plate="AssayPlate_Greiner_#655090", well="D02", field=1, channel=2, action=2, extension=".tiff")
    write_tiff(tmp_path / format_name(copy), rng.integers(0, 9, (48, 64), dtype=np.uint16))
    with pytest.raises(PlateError, match="C02.tiff: duplicate of .*C02.tif; remove one of the two"):
        target_fields(tmp_path, magnification="20x")


def test_target_fields_refuses_two_plates_in_one_folder(tmp_path):
    rng = np.random.default_rng(2)
    write_field(tmp_path, "D02", 1, rng)
    for channel in (1, 2, 3):
        other = ImageName(plate="OtherPlate", well="D02", field=1, channel=channel, action=channel)
        write_tiff(tmp_path / format_name(other), rng.integers(0, 9, (48, 64), dtype=np.uint16))
    with pytest.raises(PlateError, match="second 20x D02 F001 in the folder"):
        target_fields(tmp_path, magnification="20x")


def test_feature_table_has_the_102_columns_one_row_per_field(tmp_path):
    rng = np.random.default_rng(3)
    for well, fov in [("D02", 7), ("B02", 2), ("B10", 1)]:
        write_field(tmp_path, well, fov, rng)
    fields, _ = target_fields(tmp_path, magnification="20x")
    result = FeatureTable.measure(fields, magnification="20x", measure=fake_measure, keep_labels=[("20x", "D02", 7)])
    frame = result.frame
    assert list(frame.columns) == list(IMAGE_COLUMNS)
    assert frame["ImageNumber"].tolist() == [1, 2, 3]
    assert frame["Metadata_Well"].tolist() == ["B02", "B10", "D02"]  # sorted like the file names
    assert frame["Metadata_FoV"].tolist() == ["F002", "F001", "F007"]
    assert frame["Count_nuclei"].tolist() == [2.0, 2.0, 2.0]
    nuclei = result.objects["nuclei_no_edge"]
    assert list(nuclei.columns[:3]) == ["ImageNumber", "Metadata_Well", "Metadata_FoV"]
    assert len(nuclei) == 6 and sorted(nuclei["AreaShape_Area"].unique()) == [60, 100]
    assert list(result.labels) == [("20x", "D02", 7)]
    assert set(result.labels[("20x", "D02", 7)]) == {"nuclei", "cells", "lipids"}
    assert result.warnings == ["B02 F002, B10 F001, D02 F007: fake 20x"]  # one line per distinct message


def test_feature_table_workers_give_the_same_table(tmp_path):
    rng = np.random.default_rng(4)
    for fov in (1, 2, 3):
        write_field(tmp_path, "E05", fov, rng)
    fields, _ = target_fields(tmp_path, magnification="60x")
    serial = FeatureTable.measure(fields, magnification="60x", measure=fake_measure)
    parallel = FeatureTable.measure(list(reversed(fields)), magnification="60x", measure=fake_measure, workers=2)
    pd.testing.assert_frame_equal(serial.frame, parallel.frame)
    pd.testing.assert_frame_equal(serial.objects["nuclei_no_edge"], parallel.objects["nuclei_no_edge"])


def threaded_fake_measure(nuclei, lipids, cytoplasm, *, magnification, threads=None):
    """fake_measure that reports the threads it was given as its warning."""
    result = fake_measure(nuclei, lipids, cytoplasm, magnification=magnification)
    return FakeMeasurements(result.features, result.objects, result.labels, [f"threads={threads}"])


def test_feature_table_shares_the_cpus_between_worker_processes(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    for fov in (1, 2):
        write_field(tmp_path, "E05", fov, rng)
    fields, _ = target_fields(tmp_path, magnification="60x")
    monkeypatch.setattr("vstain.plate.jobs.usable_cpus", lambda: 8)
    serial = FeatureTable.measure(fields, magnification="60x", measure=threaded_fake_measure)
    assert serial.warnings == ["E05 F001, E05 F002: threads=8"]  # one worker: every CPU for its field
    parallel = FeatureTable.measure(fields, magnification="60x", measure=threaded_fake_measure, workers=2)
    assert parallel.warnings == ["E05 F001, E05 F002: threads=4"]  # 8 CPUs over 2 worker processes


def test_feature_table_refuses_a_measurement_without_all_features(tmp_path):
    rng = np.random.default_rng(5)
    write_field(tmp_path, "D02", 1, rng)
    fields, _ = target_fields(tmp_path, magnification="20x")

    def incomplete(nuclei, lipids, cytoplasm, *, magnification):
        result = fake_measure(nuclei, lipids, cytoplasm, magnification=magnification)
        del result.features["Count_nuclei"]
        return result

    with pytest.raises(RuntimeError, match="D02 F001: measurement returned no Count_nuclei"):
        FeatureTable.measure(fields, magnification="20x", measure=incomplete)


def test_csv_round_trip_keeps_nan_as_cellprofiler_writes_it(tmp_path):
    rng = np.random.default_rng(6)
    write_field(tmp_path, "D02", 1, rng)
    fields, _ = target_fields(tmp_path, magnification="20x")
    result = FeatureTable.measure(fields, magnification="20x", measure=fake_measure)
    result.frame.loc[0, "Mean_cells_no_edge_AreaShape_Area"] = np.nan
    path = result.write_csv(tmp_path / "out" / "features.csv")
    assert path.read_text().splitlines()[0] == ",".join(IMAGE_COLUMNS)
    assert ",nan," in path.read_text()
    loaded = FeatureTable.read_csv(path, magnification="20x")
    pd.testing.assert_frame_equal(loaded.frame, result.frame, check_dtype=False)
    written = result.write_objects(tmp_path / "out", prefix="objects_truth")
    assert [p.name for p in written] == ["objects_truth_nuclei_no_edge.csv"]
    (tmp_path / "bad.csv").write_text("ImageNumber,Metadata_Well\n1,D02\n")
    with pytest.raises(PlateError, match="bad.csv: missing column"):
        FeatureTable.read_csv(tmp_path / "bad.csv", magnification="20x")


def test_evaluation_modules_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, vstain.evaluation.table, vstain.evaluation.metric, vstain.evaluation.report, "
        "vstain.commands.evaluate; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


CALLS: list[float] = []


def counting_measure(nuclei, lipids, cytoplasm, *, magnification):
    CALLS.append(float(nuclei.mean()))
    return fake_measure(nuclei, lipids, cytoplasm, magnification=magnification)


def test_saved_field_results_are_reused_and_only_missing_fields_are_measured(tmp_path):
    rng = np.random.default_rng(8)
    for well in ("B02", "C03"):
        for fov in (1, 2, 3):
            write_field(tmp_path / "plate", well, fov, rng)
    fields, _ = target_fields(tmp_path / "plate", magnification="20x")
    results = tmp_path / "results"
    CALLS.clear()
    first = FeatureTable.measure(fields, magnification="20x", measure=counting_measure, results=results,
                                 keep_labels=[fields[0].key])
    assert len(CALLS) == 6 and len(list(results.glob("*.json"))) == 6 and len(list(results.glob("*.npz"))) == 1
    # as a killed job leaves it: two fields never saved
    (results / "C03_F002.json").unlink()
    (results / "B02_F001.json").unlink()
    CALLS.clear()
    resumed = FeatureTable.measure(fields, magnification="20x", measure=counting_measure, results=results,
                                   keep_labels=[fields[0].key])
    assert len(CALLS) == 2  # only the missing fields
    pd.testing.assert_frame_equal(first.frame, resumed.frame)
    for name in first.objects:
        pd.testing.assert_frame_equal(first.objects[name], resumed.objects[name])
    assert first.warnings == resumed.warnings
    np.testing.assert_array_equal(first.labels[fields[0].key]["nuclei"], resumed.labels[fields[0].key]["nuclei"])
    # a changed image makes its saved result stale
    image = next(fields[3].targets.values().__iter__())
    write_tiff(image, rng.integers(200, 800, (48, 64), dtype=np.uint16))
    CALLS.clear()
    FeatureTable.measure(fields, magnification="20x", measure=counting_measure, results=results)
    assert len(CALLS) == 1
    # the saved tables reproduce the CSV byte for byte
    first.write_csv(tmp_path / "a.csv")
    resumed.write_csv(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
