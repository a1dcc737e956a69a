"""Minimum cross-entropy thresholding with CellProfiler 4.0.5 semantics (docs/cellprofiler-pipeline.md §4.1).

Every threshold in the challenge's pipelines is "Minimum Cross-Entropy", i.e. scikit-image's
:func:`~skimage.filters.threshold_li`. Two strategies are used:

* ``"global"``: ``clip(threshold_li(image) * correction, lower, upper)``.
* ``"adaptive"``: threshold_li per block of ``shape // window`` blocks, blended by a
  :class:`scipy.interpolate.RectBivariateSpline`, multiplied by the correction and clamped per
  pixel to ``[max(lower, 0.7 guide), min(upper, 1.5 guide)]`` where ``guide`` is the global
  threshold above.

The binary image compares a *smoothed* image with the (unsmoothed) threshold:
``G_sigma(image) >= threshold`` with ``sigma = smoothing_scale / 0.6744 / 2`` and a
zero-padded Gaussian renormalised by the same filter applied to the all-ones mask (CellProfiler's
``smooth_with_function_and_mask``).

``semantics="cp5"`` reproduces CellProfiler 5, the installable yardstick: MCE tolerance
``max(min gap / 2, 0.5 / 65536)`` over the whole image, and zero-valued pixels dropped from
adaptive blocks.

Public API: :class:`ThresholdSettings`, :func:`min_cross_entropy_threshold`,
:func:`global_threshold`, :func:`adaptive_threshold`, :func:`apply_threshold`,
:func:`smooth_for_threshold`, :func:`effective_window`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.interpolate
import scipy.ndimage as ndi
from skimage.filters import threshold_li

Strategy = Literal["global", "adaptive"]
Semantics = Literal["cp4", "cp5"]

#: Adaptive block thresholds are clamped to this multiple of the guide (global) threshold.
GUIDE_LIMITS = (0.7, 1.5)


@dataclass(frozen=True)
class ThresholdSettings:
    """One CellProfiler threshold: strategy, smoothing scale, correction factor, bounds, window.

    ``window`` (pixels) is required for the adaptive strategy and ignored by the global one.
    """

    strategy: Strategy
    smoothing_scale: float
    correction: float
    lower: float
    upper: float
    window: int | None = None

    @property
    def sigma(self) -> float:
        """Gaussian sigma of the smoothing applied before comparison (0 = none)."""
        return self.smoothing_scale / 0.6744 / 2.0


def _cp5_tolerance(values: np.ndarray) -> float | None:
    unique = np.unique(values)
    if unique.size < 2:
        return None
    return float(max(np.min(np.diff(unique)) / 2, 0.5 / 65536))


def min_cross_entropy_threshold(values: np.ndarray, *, tolerance: float | None = None) -> float:
    """Li's minimum cross-entropy threshold of ``values`` with CellProfiler's shortcuts.

    An empty array gives 0 and a constant array gives its value (threshold_li would fail).
    ``tolerance`` None is scikit-image's default (half the smallest gap between distinct values).
    """
    values = np.asarray(values).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return 0.0
    first = values[0]
    if np.all(values == first):
        return float(first)
    return float(threshold_li(values, tolerance=tolerance))


def global_threshold(image: np.ndarray, settings: ThresholdSettings, *, semantics: Semantics = "cp4") -> float:
    """Corrected global MCE threshold ``clip(t * correction, lower, upper)`` of ``image``."""
    tolerance = _cp5_tolerance(image) if semantics == "cp5" else None
    t = min_cross_entropy_threshold(image, tolerance=tolerance) * settings.correction
    return float(min(max(t, settings.lower), settings.upper))


def effective_window(shape: tuple[int, ...], window: int) -> tuple[int, str | None]:
    """The adaptive window CellProfiler can use on ``shape``, and a warning if it had to shrink.

    CellProfiler refuses a window larger than half an image side (fewer than 2 blocks); vstain
    clamps it to half the shorter side instead and says so.
    """
    shortest = int(min(shape[:2]))
    if shortest // window >= 2:
        return window, None
    clamped = max(shortest // 2, 1)
    return clamped, (
        f"adaptive window {window} px exceeds half of the {shape[0]}x{shape[1]} field "
        f"(CellProfiler would refuse); clamped to {clamped} px"
    )


def _block_thresholds(image: np.ndarray, window: int, semantics: Semantics) -> tuple[np.ndarray, np.ndarray]:
    shape = np.array(image.shape[:2], dtype=int)
    nblocks = shape // window
    increment = shape.astype(float) / nblocks.astype(float)
    tolerance = _cp5_tolerance(image) if semantics == "cp5" else None
    edges_i = [int(k * increment[0]) for k in range(nblocks[0] + 1)]
    edges_j = [int(k * increment[1]) for k in range(nblocks[1] + 1)]
    blocks = np.zeros((nblocks[0], nblocks[1]))
    for i in range(nblocks[0]):
        for j in range(nblocks[1]):
            block = image[edges_i[i] : edges_i[i + 1], edges_j[j] : edges_j[j + 1]]
            if semantics == "cp5":
                block = block[block != 0]  # CP5 keeps block[~logical_not(block)]
            blocks[i, j] = min_cross_entropy_threshold(block, tolerance=tolerance)
    return blocks, increment


def adaptive_threshold(
    image: np.ndarray, settings: ThresholdSettings, *, semantics: Semantics = "cp4", window: int | None = None
) -> np.ndarray:
    """Per-pixel adaptive MCE threshold map of ``image`` (same shape, float64).

    ``window`` overrides ``settings.window`` (use :func:`effective_window` to get a legal one).
    Raises ``ValueError`` if the window leaves fewer than 2 blocks along an axis.
    """
    window = int(window if window is not None else settings.window)
    shape = np.array(image.shape[:2], dtype=int)
    nblocks = shape // window
    if np.any(nblocks < 2):
        raise ValueError(f"adaptive window of {window} px is too large for a {shape[0]}x{shape[1]} image")
    blocks, increment = _block_thresholds(image, window, semantics)
    degree = int(min(3, nblocks.min() - 1))
    knots = [
        np.linspace(int(increment[a] / 2), int((nblocks[a] - 0.5) * increment[a]), nblocks[a]) for a in (0, 1)
    ]
    spline = scipy.interpolate.RectBivariateSpline(
        knots[0],
        knots[1],
        blocks,
        bbox=(0.5, shape[0] - 0.5, 0.5, shape[1] - 0.5),
        kx=degree,
        ky=degree,
    )
    out = [np.linspace(0.5, int(nblocks[a] * increment[a]) - 0.5, shape[a]) for a in (0, 1)]
    thresholds = spline(out[0], out[1]) * settings.correction
    guide = global_threshold(image, settings, semantics=semantics)
    low = max(settings.lower, guide * GUIDE_LIMITS[0])
    high = min(settings.upper, guide * GUIDE_LIMITS[1])
    # Sequential assignments, not np.clip: when high < low CellProfiler's order makes high win.
    thresholds[thresholds < low] = low
    thresholds[thresholds > high] = high
    return thresholds


def smooth_for_threshold(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian of ``image`` with zero padding, renormalised at the edges (sigma 0 = unchanged)."""
    if sigma == 0:
        return image
    blurred = ndi.gaussian_filter(image, sigma, mode="constant", cval=0)
    weight = ndi.gaussian_filter(np.ones(image.shape, dtype=image.dtype), sigma, mode="constant", cval=0)
    return blurred / weight


def apply_threshold(
    image: np.ndarray,
    settings: ThresholdSettings,
    *,
    semantics: Semantics = "cp4",
    warnings: list[str] | None = None,
    module: str = "threshold",
) -> tuple[np.ndarray, float | np.ndarray]:
    """Threshold ``image`` (float, CellProfiler's 0-1 scale) as CellProfiler does.

    Parameters
    ----------
    image : (H, W) float array.
    settings : the module's :class:`ThresholdSettings`.
    semantics : ``"cp4"`` (CellProfiler 4.0.5, the challenge's) or ``"cp5"``.
    warnings : if given, a warning naming ``module`` is appended when the adaptive window had to
        be clamped to fit the field.
    module : name used in that warning.

    Returns
    -------
    binary : bool array, ``smoothed(image) >= threshold``.
    threshold : float (global) or (H, W) float64 map (adaptive).
    """
    if settings.strategy == "adaptive":
        if settings.window is None:
            raise ValueError("adaptive thresholding needs a window")
        window, warning = effective_window(image.shape, settings.window)
        if warning is not None and warnings is not None:
            warnings.append(f"{module}: {warning}")
        threshold: float | np.ndarray = adaptive_threshold(image, settings, semantics=semantics, window=window)
    elif settings.strategy == "global":
        threshold = global_threshold(image, settings, semantics=semantics)
    else:
        raise ValueError(f"unknown threshold strategy {settings.strategy!r}")
    binary = smooth_for_threshold(image, settings.sigma) >= threshold
    return binary, threshold
