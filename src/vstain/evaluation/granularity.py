"""MeasureGranularity on a whole image, CellProfiler semantics (docs/cellprofiler-pipeline.md §4.6).

The granular spectrum is the share of image signal removed by successive openings (erosion by
``disk(1)``, cumulative, followed by grey reconstruction) of a background-subtracted,
subsampled copy of the image:

1. Subsample: sample the image at ``mgrid[0:new_shape] / subsample`` with linear interpolation,
   ``new_shape = shape * subsample``.
2. Background: subsample that again by ``background_subsample``, open it (erosion then
   dilation by ``disk(radius)``), interpolate back onto the ``new_shape`` grid and subtract,
   clipping below 0.
3. Spectrum: ``GS_i = (mean(rec_{i-1}) - mean(rec_i)) * 100 / mean(pixels)`` for
   i = 1..steps.

``semantics="cp4"`` is CellProfiler 4.0.5 (the challenge): ``new_shape`` stays fractional
(538.5 x 638.5 for a 2154 x 2554 field) and the background shape is derived from it; pixels are
float32 as Bio-Formats delivered them. ``semantics="cp5"`` is CellProfiler 5, the installable
yardstick: the background shape comes from the integer subsampled array shape (the upsampling
grid stays fractional), the upsampled background is float64, and pixels keep the input's float
type (CellProfiler 5's imageio reader delivers float32 too; integers become float64). At sizes
whose quarter is an integer the two agree.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.ndimage as ndi

from vstain.evaluation.image_ops import disk_max_filter, disk_min_filter
from vstain.evaluation.reconstruction import CROSS, RankReconstructor

Semantics = Literal["cp4", "cp5"]


def _sample(pixels: np.ndarray, shape: np.ndarray, factor: float) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float) / factor
    return ndi.map_coordinates(pixels, (rows, cols), order=1)


def _restore(pixels: np.ndarray, small_shape: np.ndarray, shape: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    rows *= float(small_shape[0] - 1) / float(shape[0] - 1)
    cols *= float(small_shape[1] - 1) / float(shape[1] - 1)
    return ndi.map_coordinates(pixels, (rows, cols), order=1)


def background_subtracted(
    image: np.ndarray,
    *,
    subsample: float = 0.25,
    background_subsample: float = 0.25,
    radius: int = 10,
    semantics: Semantics = "cp4",
) -> np.ndarray:
    """Steps 1-2 of MeasureGranularity: the subsampled image minus its opened background (>= 0)."""
    if semantics not in ("cp4", "cp5"):
        raise ValueError(f"semantics must be 'cp4' or 'cp5', not {semantics!r}")
    pixels = np.asarray(image)
    if semantics == "cp4" or not np.issubdtype(pixels.dtype, np.floating):
        pixels = pixels.astype(np.float32 if semantics == "cp4" else np.float64)
    new_shape = np.array(pixels.shape, dtype=float)
    if subsample < 1:
        new_shape = new_shape * subsample
        pixels = _sample(pixels, new_shape, subsample)
    else:
        pixels = pixels.copy()
    if background_subsample < 1:
        base_shape = new_shape if semantics == "cp4" else np.array(pixels.shape, dtype=float)
        back_shape = base_shape * background_subsample
        back = _sample(pixels, back_shape, background_subsample)
    else:
        back = pixels.copy()
    # Grey opening with scipy's reflected borders, as skimage's erosion/dilation use.
    back = disk_max_filter(disk_min_filter(back, radius=radius), radius=radius).astype(back.dtype)
    if background_subsample < 1:
        back = _restore(back, back_shape, new_shape)
        if semantics == "cp5":
            back = back.astype(np.float64)
    # In place, as CellProfiler does: CP 5's float64 background is subtracted from float32
    # pixels in float64 and rounded back.
    np.subtract(pixels, back, out=pixels, casting="same_kind")
    pixels[pixels < 0] = 0
    return pixels


def granularity_spectrum(
    image: np.ndarray,
    *,
    subsample: float = 0.25,
    background_subsample: float = 0.25,
    radius: int = 10,
    steps: int = 16,
    semantics: Semantics = "cp4",
) -> list[float]:
    """The granular spectrum GS_1..GS_steps (percent of the mean signal) of ``image`` (float, 0-1 scale).

    Parameters are those of CellProfiler's MeasureGranularity; see the module docstring for the
    ``semantics`` difference. A constant float32 image gives all zeros; in float64 the
    interpolation leaves ~1e-17 residues that the division by ``max(mean, eps)`` amplifies, as in
    CellProfiler 5.
    """
    pixels = background_subtracted(
        image, subsample=subsample, background_subsample=background_subsample, radius=radius, semantics=semantics
    )
    start = float(np.mean(pixels))
    current = start
    start = max(start, float(np.finfo(float).eps))
    # Reconstruction only compares values, so it runs on integer ranks (exact).
    values, ranks = np.unique(pixels, return_inverse=True)
    ranks = ranks.reshape(pixels.shape)
    reconstruct = RankReconstructor(ranks)  # one mask for all steps: sorted once
    eroded = ranks
    spectrum = []
    for _ in range(steps):
        previous = current
        eroded = ndi.grey_erosion(eroded, footprint=CROSS, mode="reflect")
        rebuilt = reconstruct(eroded)
        current = float(np.mean(values[rebuilt].astype(np.float64)))
        spectrum.append((previous - current) * 100 / start)
    return spectrum


def measure_granularity(
    image: np.ndarray,
    *,
    image_name: str = "Bodipy",
    subsample: float = 0.25,
    background_subsample: float = 0.25,
    radius: int = 10,
    steps: int = 16,
    semantics: Semantics = "cp4",
) -> dict[str, float]:
    """:func:`granularity_spectrum` as CellProfiler's columns ``Granularity_<i>_<image_name>``."""
    spectrum = granularity_spectrum(
        image,
        subsample=subsample,
        background_subsample=background_subsample,
        radius=radius,
        steps=steps,
        semantics=semantics,
    )
    return {f"Granularity_{i}_{image_name}": value for i, value in enumerate(spectrum, start=1)}

