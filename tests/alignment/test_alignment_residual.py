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
    assert residual_warnings(table.assign(dy_px=0.1, dx_px=0.0)) == []
