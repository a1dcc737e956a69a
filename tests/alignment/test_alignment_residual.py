"""Residual offsets between predicted and real stains: a known shift is found and warned about."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vstain.alignment.residual import residual_offsets, residual_warnings
from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff


def _write(folder, image, field=1):
    """``image`` as every stain of a field (the index wants the C01/C02/C03 triplet)."""
    for channel in (1, 2, 3):
        name = ImageName(plate="AssayPlate_Test", well="B02", field=field, channel=channel, z=1, action=channel)
        write_tiff(folder / "20x_images" / format_name(name), image)


def test_residual_offset_of_a_shifted_truth_is_measured_and_warned(tmp_path):
    rng = np.random.default_rng(0)
    pred = ndimage.gaussian_filter(rng.random((128, 128)), 3)
    pred = (pred - pred.min()) / np.ptp(pred) * 3000 + 100
    truth = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(pred), (-2.0, 1.5))).real  # truth[q] = pred[q + (2, -1.5)]
    _write(tmp_path / "pred", pred.astype(np.uint16))
    _write(tmp_path / "truth", np.clip(truth, 0, 65535).astype(np.uint16))
    table = residual_offsets(tmp_path / "truth", tmp_path / "pred")
    assert list(table["stain"]) == ["nuclei", "lipids", "cytoplasm"] and set(table["field"]) == {1}
    assert np.allclose(table["dy_px"], 2.0, atol=0.15) and np.allclose(table["dx_px"], -1.5, atol=0.15)
    lines = residual_warnings(table)
    assert len(lines) == 3 and lines[1].startswith("20x lipids: predictions and real stains are 2.5 px apart")
    assert "(median over 1 confident of 1 fields" in lines[1]
    assert residual_warnings(table.assign(dy_px=0.1, dx_px=0.0)) == []


def test_residual_section_summarises_per_stain_and_warns():
    import pandas as pd

    from vstain.alignment.residual import residual_section, residual_summary

    table = pd.DataFrame({"magnification": ["20x"] * 4, "well": ["B02"] * 4, "field": [1, 2, 1, 2],
                          "stain": ["lipids", "lipids", "nuclei", "nuclei"], "dy_px": [3.0, 4.0, 0.1, 0.0],
                          "dx_px": [4.0, 3.0, 0.0, 0.2], "confidence": [1.0, 0.8, 0.9, 0.7]})
    summary = residual_summary(table)
    lipids = summary[summary["stain"] == "lipids"].iloc[0]
    assert lipids["fields"] == 2 and lipids["median_px"] == 5.0 and lipids["dy_px"] == 3.5 and lipids["max_px"] == 5.0
    section = residual_section(table).render()
    assert "Residual offsets" in section and "20x lipids: predictions and real stains are 5.0 px apart" in section
    assert "20x nuclei:" not in section  # within 0.5 px: no warning
    calm = residual_section(table[table["stain"] == "nuclei"]).render()
    assert "line up" in calm


def test_evaluate_puts_the_residuals_into_the_report(tmp_path):
    from vstain.cli import main

    rng = np.random.default_rng(1)
    image = (ndimage.gaussian_filter(rng.random((96, 96)), 3) * 3000 + 100).astype(np.uint16)
    _write(tmp_path / "pred", image)
    _write(tmp_path / "truth", np.roll(image, 3, axis=0))
    assert main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "eval"), "--no-progress", "--report-fields", "0"]) == 0
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "Residual offsets" in report and "the plate looks misaligned" in report
    assert (tmp_path / "eval" / "residual_offsets.csv").is_file()


def test_unconfident_residuals_never_make_a_plate_look_misaligned():
    # An aligned 60x plate of 1024² fields gave residuals like these: confident ones near 0, and
    # wild ones (up to 7.8 px) where a field had too few cells to tell. Only the confident count.
    import pandas as pd

    from vstain.alignment.residual import residual_section, residual_summary

    table = pd.DataFrame({"magnification": ["60x"] * 6, "well": ["B04"] * 6, "field": [1, 2, 3, 1, 2, 3],
                          "stain": ["lipids"] * 3 + ["cytoplasm"] * 3,
                          "dy_px": [0.4, -0.3, 3.0, -1.6, -7.8, -1.3], "dx_px": [0.3, 0.2, 2.0, 0.5, 0.3, 3.9],
                          "confidence": [0.5, 0.75, 0.25, 0.0, 0.0, 0.25]})
    assert residual_warnings(table) == []
    summary = residual_summary(table).set_index("stain")
    assert summary.loc["lipids", "confident"] == 2 and summary.loc["lipids", "median_px"] == 0.43
    assert summary.loc["lipids", "max_px"] == 0.5 and summary.loc["cytoplasm", "confident"] == 0
    assert np.isnan(summary.loc["cytoplasm", "median_px"])
    section = residual_section(table).render()
    assert "looks misaligned" not in section and "No confident residual for 60x cytoplasm" in section
    shifted = table.assign(dy_px=table["dy_px"] + 3.0)  # the confident lipids now 3 px off: warned
    (line,) = residual_warnings(shifted)
    assert line.startswith("60x lipids:") and "median over 2 confident of 3 fields" in line
