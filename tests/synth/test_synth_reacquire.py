"""Rendering a synthetic plate's stains again: the same specimen without noise, or with new noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vstain.errors import PlateError
from vstain.plate.tiff import read_tiff
from vstain.synth.plate import field_files, generate_plate
from vstain.synth.reacquire import render_stains_again
from vstain.vocabulary import TARGET_CHANNELS


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    root = tmp_path_factory.mktemp("plate")
    generate_plate(root, magnification="40x", wells=2, fields=2, seed=3, size=(96, 128), preset="bright-cytoplasm")
    return root


def _stains(folder, plate_id, well, field):
    names = field_files(plate_id, well, field)
    return {c: read_tiff(folder / "40x_images" / names[f"C{c:02d}"]).astype(np.float64)
            for c in sorted(TARGET_CHANNELS.values())}


def test_noise_free_and_reacquired_stains_differ_from_the_record_by_camera_noise_only(plate, tmp_path):
    plate_id = json.loads((plate / "plate.json").read_text())["plate_id"]
    truth = _stains(plate, plate_id, "B03", 2)
    for kind in ("noise_free", "reacquired"):
        written = render_stains_again(plate, "40x", [("B03", "F002")], tmp_path / kind, kind=kind, noise_seed=7)
        assert [p.name for p in written] == [field_files(plate_id, "B03", 2)[f"C{c:02d}"] for c in (1, 2, 3)]
    clean = _stains(tmp_path / "noise_free", plate_id, "B03", 2)
    again = _stains(tmp_path / "reacquired", plate_id, "B03", 2)
    for channel in (1, 2, 3):
        recorded_noise = truth[channel] - clean[channel]
        new_noise = again[channel] - clean[channel]
        # The same specimen: the noise has no offset and is small next to the image's own contrast ...
        assert abs(recorded_noise.mean()) < 0.1 * recorded_noise.std() + 0.5
        assert recorded_noise.std() < 0.5 * clean[channel].std()
        # ... and the second exposure is a fresh draw of the same camera: same spread, uncorrelated.
        assert new_noise.std() == pytest.approx(recorded_noise.std(), rel=0.1)
        assert abs(np.corrcoef(recorded_noise.ravel(), new_noise.ravel())[0, 1]) < 0.1
    # Deterministic from the seeds; another noise seed, another exposure.
    render_stains_again(plate, "40x", [("B03", "F002")], tmp_path / "same", kind="reacquired", noise_seed=7)
    render_stains_again(plate, "40x", [("B03", "F002")], tmp_path / "other", kind="reacquired", noise_seed=8)
    assert np.array_equal(_stains(tmp_path / "same", plate_id, "B03", 2)[2], again[2])
    assert not np.array_equal(_stains(tmp_path / "other", plate_id, "B03", 2)[2], again[2])


def test_fields_the_plate_does_not_hold_are_refused(plate, tmp_path):
    with pytest.raises(PlateError, match="no 40x field B09 F001"):
        render_stains_again(plate, "40x", [("B09", "F001")], tmp_path, kind="noise_free")
    with pytest.raises(PlateError, match="no 20x field B02 F001"):
        render_stains_again(plate, "20x", [("B02", "F001")], tmp_path, kind="noise_free")
    with pytest.raises(PlateError, match="plate.json: not found"):
        render_stains_again(tmp_path, "40x", [("B02", "F001")], tmp_path / "out", kind="noise_free")


def test_median_loading_changes_only_each_cells_cytoplasm_level(tmp_path):
    plate = tmp_path / "plate"  # the reference preset: loadings spread by a log-normal sigma of 0.3
    generate_plate(plate, magnification="40x", wells=1, fields=1, seed=5, size=(384, 384))
    plate_id = json.loads((plate / "plate.json").read_text())["plate_id"]
    for kind in ("noise_free", "median_loading"):
        render_stains_again(plate, "40x", [("B02", "F001")], tmp_path / kind, kind=kind)
    clean = _stains(tmp_path / "noise_free", plate_id, "B02", 1)
    median = _stains(tmp_path / "median_loading", plate_id, "B02", 1)
    # The same specimen (the random draws after the loadings are unchanged): nuclei and lipids as noise_free ...
    assert np.array_equal(median[1], clean[1]) and np.array_equal(median[2], clean[2])
    # ... and the cytoplasm at other levels per cell, without noise, with its spread between cells gone.
    assert not np.array_equal(median[3], clean[3])
    labels = read_tiff(plate / "masks" / "40x_images" / field_files(plate_id, "B02", 1)["C01"])
    ratios = [np.median(clean[3][labels == n]) / np.median(median[3][labels == n]) for n in np.unique(labels)[1:]]
    assert len(ratios) >= 2 and np.std(np.log(ratios)) > 0.05  # the recorded loadings differ from cell to cell


def test_median_loading_of_a_plate_without_loading_spread_is_the_noise_free_render(tmp_path):
    root = tmp_path / "plate"
    generate_plate(root, magnification="40x", wells=1, fields=1, seed=4, size=(96, 128),
                   overrides={"cytoplasm_loading_sigma": 0.0})
    plate_id = json.loads((root / "plate.json").read_text())["plate_id"]
    for kind in ("noise_free", "median_loading"):
        render_stains_again(root, "40x", [("B02", "F001")], tmp_path / kind, kind=kind)
    clean, median = (_stains(tmp_path / k, plate_id, "B02", 1) for k in ("noise_free", "median_loading"))
    assert all(np.array_equal(clean[c], median[c]) for c in (1, 2, 3))
