"""``frame="fluorescence"``: predictions moved by the bundle's (or a file's) site offsets; mismatches refused."""

from __future__ import annotations

import numpy as np
import pytest

import vstain
from tiny_bundles import bundle_metadata, write_plate
from vstain.alignment.offsets import resolve
from vstain.alignment.resample import to_fluorescence_frame
from vstain.errors import AlignmentError, BundleError
from vstain.inference.bundle import save_bundle
from vstain.plate.tiff import read_tiff

SITES = {"magnification": "20x", "sites": {"lipids": {"F001": [2.0, -1.0], "F002": [0.5, 3.0]}}}


def test_fluorescence_frame_moves_each_field_by_its_site_offset(tmp_path, tiny_tiramisu):
    bundle = save_bundle(tmp_path / "m", tiny_tiramisu, {**bundle_metadata(), "alignment": SITES})
    plate = write_plate(tmp_path / "plate", fields=(1, 2))
    vstain.Predictor([bundle]).predict_plate(plate, tmp_path / "bf", progress=False)
    vstain.Predictor([bundle], frame="fluorescence").predict_plate(plate, tmp_path / "fl", progress=False)
    for name, offset in (("F001", (2.0, -1.0)), ("F002", (0.5, 3.0))):
        file = f"AssayPlate_Test_B02_T0001{name}L01A02Z01C02.tif"
        brightfield_frame = read_tiff(tmp_path / "bf" / file)
        expected = np.clip(np.rint(to_fluorescence_frame(brightfield_frame, offset)), 0, 65535).astype(np.uint16)
        np.testing.assert_array_equal(read_tiff(tmp_path / "fl" / file), expected)


def test_offsets_file_overrides_and_must_cover_the_sites(tmp_path, tiny_tiramisu):
    bundle = save_bundle(tmp_path / "m", tiny_tiramisu, bundle_metadata())  # trained without alignment
    plate = write_plate(tmp_path / "plate", fields=(1, 2))
    with pytest.raises(BundleError, match="carries no offsets for the fluorescence frame"):
        vstain.Predictor([bundle], frame="fluorescence")
    only_f001 = resolve({("20x", "B02", 1, "lipids"): (1.0, 1.0, 1.0)}).save(tmp_path / "offsets.csv")
    predictor = vstain.Predictor([bundle], frame="fluorescence", offsets=only_f001)
    with pytest.raises(AlignmentError, match="offsets.csv: no 20x lipids offset for site\\(s\\) F002"):
        predictor.predict_plate(plate, tmp_path / "out", progress=False)
    with pytest.raises(vstain.errors.VstainError, match="fluorescence frame only"):
        vstain.Predictor([bundle], offsets=only_f001)
