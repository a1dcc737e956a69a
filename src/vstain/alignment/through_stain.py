"""Offset of the nuclei stain measured through the cytoplasm stain, where brightfield cannot show it.

Nuclei are nearly transparent in brightfield, so no brightfield-derived reference registers C01
(docs/alignment.md). But CellTracker is thinner over the nucleus than beside it, so the cytoplasm
stain (C03) shows every nucleus as a shallow hole, and C03 itself registers well against the
brightfield. Both are fluorescence, so the offset *between* them can be measured directly:

    d(nuclei) = d(cytoplasm) + r,     r = offset of C01 against C03,

with the module :mod:`vstain.alignment.estimate`'s sign convention for every ``d`` (a structure at
brightfield ``p`` is at stain ``p - d``): a structure at C03 pixel ``q`` is then at C01 pixel
``q - r``.

How ``r`` is measured (:func:`relative_offset`): the nucleus outlines of C01 (the smoothed stain,
thresholded, holes filled) are matched against the fine structure of C03 (its logarithm minus a
local mean, so that a cell's brightness does not matter and a hole's edge does), counting only
pixels inside cells and away from the lipid droplets, which are deeper holes in C03 than the
nuclei (C02 marks them). The match is the fraction of C03's fine structure the shifted outlines
explain, computed for every whole-pixel shift with Fourier transforms and refined to a subpixel
peak by a quadratic fit. All lengths are in micrometres, so one recipe serves 20x, 40x and 60x.

``r`` is a property of the optics between two fluorescence channels (the same at every site), so
:func:`plate_relative` finds one for the fields of a magnification: the peak of their matches
summed. Its *confidence* is the fraction of fields whose own peak agrees with it to within
:data:`~vstain.alignment.estimate.AGREE_PX`: a cytoplasm stain without holes at the nuclei gives
fields that disagree, hence low confidence, and the offsets fall back as before
(:func:`vstain.alignment.offsets.resolve`). Where single fields hold few nuclei (60x) they scatter
by a pixel or more while their sum is still precise, so the sum is also trusted where its bootstrap
standard error over the fields is small (:meth:`PlateRelative.trusted`). Accuracy on synthetic
plates: docs/alignment.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from vstain.alignment.estimate import AGREE_PX, bin_blocks, fast_length
from vstain.vocabulary import PIXEL_SIZE_UM

#: The stain each stain is registered through where brightfield does not show it.
THROUGH: dict[str, str] = {"nuclei": "cytoplasm"}
#: Scale (um) of the local mean removed from log C03: keeps the edges of the nucleus holes.
FINE_STRUCTURE_UM = 0.65
#: Smoothing (um) of C01 before its outlines are thresholded (chromatin texture, nucleoli).
NUCLEUS_SMOOTH_UM = 0.65
#: Droplets (C02 above its Otsu threshold) widened by this much (um) before they are left out.
DROPLET_MARGIN_UM = 0.65
#: Smoothing (um) of C03 before "inside a cell" is thresholded.
CELL_SMOOTH_UM = 2.6
#: Largest relative offset searched for, in working pixels per axis.
SEARCH_PX = 8
#: A plate's relative offset needs at least this many fields that agree on it.
MIN_AGREEING_FIELDS = 2
#: A pooled relative offset whose bootstrap standard error over the fields is at most this (px) is
#: trusted even where few single fields agree with it (60x fields hold few nuclei each, so single
#: fields scatter by a pixel or more while their sum is precise): the accuracy the alignment aims for
#: (docs/alignment.md, targets).
MAX_STANDARD_ERROR_PX = 0.2
#: The standard error is only estimated from at least this many matched fields (126 distinct
#: resamples; three fields give ten, too few to say how the sum scatters).
MIN_BOOTSTRAP_FIELDS = 5
#: Resamples of the fields behind the standard error (a fixed seed: the same plate, the same answer).
BOOTSTRAP_RESAMPLES = 200
#: Images are binned to about this pixel size (um) first: 20x as it is, 40x 2x2, 60x 3x3.
WORKING_PIXEL_UM = 0.3


@dataclass(frozen=True)
class RelativeOffset:
    """Offset ``(dy, dx)`` of one stain against another in one field, and how well it was seen.

    Attributes
    ----------
    dy, dx
        ``r`` of the module docstring, in pixels.
    explained
        Fraction of the reference's fine structure the matched outlines explain at the peak (R²).
    """

    dy: float
    dx: float
    explained: float


@dataclass(frozen=True)
class PlateRelative:
    """The relative offset of a magnification's fields (:func:`plate_relative`), with the fields' agreement.

    Attributes
    ----------
    dy, dx
        In pixels.
    confidence
        Fraction of the fields (those without an estimate included) whose own estimate is within
        :data:`~vstain.alignment.estimate.AGREE_PX` of ``(dy, dx)``; 0 if fewer than
        :data:`MIN_AGREEING_FIELDS` agree.
    fields
        How many fields gave an estimate of their own.
    agreeing, sampled
        How many fields agree, out of how many were measured.
    standard_error
        Bootstrap standard error (px, the larger axis) of the pooled offset over the fields that
        matched (:func:`bootstrap_error`); None with fewer than :data:`MIN_BOOTSTRAP_FIELDS` of them.
    """

    dy: float
    dx: float
    confidence: float
    fields: int
    agreeing: int
    sampled: int
    standard_error: float | None = None

    def trusted(self, min_confidence: float) -> bool:
        """Whether the offset may be used: enough fields agree with it, or their sum pins it down.

        Parameters
        ----------
        min_confidence
            The share of agreeing fields that suffices on its own
            (:data:`vstain.alignment.offsets.MIN_CONFIDENCE` by default in ``vstain align``).
        """
        if self.confidence >= min_confidence:
            return True
        return self.standard_error is not None and self.standard_error <= MAX_STANDARD_ERROR_PX


def nucleus_outlines(nuclei: np.ndarray, pixel_um: float) -> np.ndarray:
    """Nucleus mask of a C01 image, slightly blurred so that subpixel shifts change it smoothly (float32)."""
    smooth = ndimage.gaussian_filter(np.asarray(nuclei, dtype=np.float32), NUCLEUS_SMOOTH_UM / pixel_um, truncate=3.0)
    if np.ptp(smooth) == 0:
        return np.zeros_like(smooth)
    mask = ndimage.binary_fill_holes(smooth > _otsu(smooth))
    return ndimage.gaussian_filter(mask.astype(np.float32), 1.0, truncate=3.0)


def cytoplasm_fine_structure(
    cytoplasm: np.ndarray, pixel_um: float, lipids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fine structure of log C03 and the pixels to compare it on (inside cells, off droplets).

    Returns
    -------
    tuple of numpy.ndarray
        ``(structure, weight)``: float32 log C03 minus its local mean, and a bool mask.
    """
    image = np.asarray(cytoplasm, dtype=np.float32)
    # The floor keeps the log finite in the gaps between cells and inside droplets (the camera
    # background); the droplets themselves are left out below.
    floor = float(np.percentile(image, 1)) + 1.0
    log = np.log(np.maximum(image, floor))
    structure = log - ndimage.gaussian_filter(log, FINE_STRUCTURE_UM / pixel_um, truncate=3.0)
    weight = _cells(image, pixel_um)
    if lipids is not None:
        lipids = np.asarray(lipids, dtype=np.float32)
        if np.ptp(lipids) > 0:
            droplets = lipids > _otsu(lipids)
            margin = max(int(round(DROPLET_MARGIN_UM / pixel_um)), 1)
            weight &= ~ndimage.binary_dilation(droplets, iterations=margin)
    return structure.astype(np.float32), weight


def _cells(image: np.ndarray, pixel_um: float) -> np.ndarray:
    """Inside cells (bool, ``image``'s shape): C03 smoothed and thresholded, its holes filled."""
    # On 4x4 blocks: the mask is coarse, and the smoothing at this scale is the costliest step.
    block = 4
    coarse = bin_blocks(image, block)
    smooth = ndimage.gaussian_filter(coarse, CELL_SMOOTH_UM / (pixel_um * block), truncate=3.0)
    if np.ptp(smooth) == 0:
        return np.zeros(image.shape, bool)
    # Holes filled: a nucleus (or a cluster of droplets) is a dark hole in a bright cell, and the
    # nucleus holes are exactly what is compared, so they must stay inside the mask.
    cells = ndimage.binary_fill_holes(smooth > _otsu(smooth))
    full = np.repeat(np.repeat(cells, block, axis=0), block, axis=1)
    pad = [(0, n - m) for n, m in zip(image.shape, full.shape)]
    return np.pad(full, pad, mode="edge")


def _otsu(image: np.ndarray) -> float:
    """Otsu's threshold of ``image`` from every third pixel per axis (the histogram barely changes; 9x cheaper)."""
    return float(threshold_otsu(image[::3, ::3]))


@dataclass(frozen=True)
class FieldMatch:
    """The sums behind one field's match, for every whole shift ``s`` (``(2r+1, 2r+1)`` arrays).

    ``covariance[s]`` is ``Σ a M_s`` and ``variance[s]`` is ``Σ w M_s² − (Σ w M_s)² / N`` (the
    outlines' variance over the compared pixels), ``energy`` is ``Σ a²``; sums over fields of one
    magnification pool them (:func:`pooled_offset`). ``factor`` is the binning.
    """

    covariance: np.ndarray
    variance: np.ndarray
    energy: float
    factor: int


def field_match(
    nuclei: np.ndarray, cytoplasm: np.ndarray, *, magnification: str, lipids: np.ndarray | None = None,
) -> FieldMatch | None:
    """How well the nucleus outlines, shifted by every whole working pixel, explain the cytoplasm's fine structure.

    Parameters
    ----------
    nuclei, cytoplasm
        The field's C01 and C03 images, ``(H, W)``, each in its own (fluorescence) frame.
    magnification
        Sets the pixel size, hence every length of the recipe.
    lipids
        The field's C02: its droplets are left out of the comparison. Optional.

    Returns
    -------
    FieldMatch or None
        None for a blank stain or a field without cells.
    """
    # Binned to about 20x's pixel: the holes' edges are a few micrometres long and blurred by the
    # optics, so finer pixels add cost (4-9x at 40x and 60x), not accuracy (docs/alignment.md).
    factor = max(int(round(WORKING_PIXEL_UM / PIXEL_SIZE_UM[magnification])), 1)
    pixel_um = PIXEL_SIZE_UM[magnification] * factor
    nuclei, cytoplasm = (bin_blocks(np.asarray(image, np.float32), factor) for image in (nuclei, cytoplasm))
    lipids = None if lipids is None else bin_blocks(np.asarray(lipids, np.float32), factor)
    outlines = nucleus_outlines(nuclei, pixel_um)
    structure, weight = cytoplasm_fine_structure(cytoplasm, pixel_um, lipids)
    # A centred crop to FFT-friendly sides (as in vstain.alignment.estimate): the full fields'
    # sides have large prime factors.
    crop = tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(weight.shape, map(fast_length, weight.shape)))
    outlines, structure, weight = outlines[crop], structure[crop], weight[crop]
    radius = SEARCH_PX
    # Zero weight within the search radius of the border: the circular correlations below then
    # never pair a pixel with one wrapped around from the other side.
    weight[:radius] = weight[-radius:] = False
    weight[:, :radius] = weight[:, -radius:] = False
    count = int(weight.sum())
    if count < 100 or not outlines.any():
        return None
    a = np.where(weight, structure - structure[weight].mean(), 0.0).astype(np.float32)
    energy = float((a.astype(np.float64) ** 2).sum())
    if energy == 0:
        return None
    # For each shift s, the outlines M(p + s) against the structure a(p) over the weighted pixels:
    # R²(s) = (Σ a M_s)² / (Σ a² · (Σ w M_s² − (Σ w M_s)² / N)). Three correlations.
    covariance, s1, s2 = _correlations(a, weight.astype(np.float32), outlines, radius)
    return FieldMatch(covariance, np.maximum(s2 - s1**2 / count, 0.0), energy, factor)


def best_offset(match: FieldMatch | None) -> RelativeOffset | None:
    """The subpixel shift whose outlines explain the most of the structure (R²), or None at the edge of the search."""
    if match is None:
        return None
    explained = np.where(match.variance > 0,
                         match.covariance**2 / np.maximum(match.variance, 1e-12) / match.energy, 0.0)
    radius = explained.shape[0] // 2
    iy, ix = np.unravel_index(int(np.argmax(explained)), explained.shape)
    if not (0 < iy < 2 * radius and 0 < ix < 2 * radius):
        return None
    fine = _quadratic_peak(explained[iy - 1 : iy + 2, ix - 1 : ix + 2])
    if fine is None:
        return None
    # explained[radius + s] pairs C03 pixel p with C01 pixel p + s, so r = -s.
    sy, sx = (iy - radius + fine[0]) * match.factor, (ix - radius + fine[1]) * match.factor
    return RelativeOffset(float(-sy), float(-sx), float(explained[iy, ix]))


def pooled_offset(matches: Iterable[FieldMatch | None]) -> RelativeOffset | None:
    """:func:`best_offset` of the sums of several fields' matches (one magnification), None if none matched."""
    found = [m for m in matches if m is not None]
    if not found:
        return None
    return best_offset(FieldMatch(sum(m.covariance for m in found), sum(m.variance for m in found),
                                  sum(m.energy for m in found), found[0].factor))


def relative_offset(
    nuclei: np.ndarray, cytoplasm: np.ndarray, *, magnification: str, lipids: np.ndarray | None = None,
) -> RelativeOffset | None:
    """Offset ``r`` of C01 against C03 in one field (module docstring), or None where nothing matches.

    Parameters
    ----------
    nuclei, cytoplasm, magnification, lipids
        As in :func:`field_match`.

    Returns
    -------
    RelativeOffset or None
        None for a blank stain, a field without cells, or a best match at the edge of the search.
    """
    return best_offset(field_match(nuclei, cytoplasm, magnification=magnification, lipids=lipids))


def plate_relative(matches: Iterable[FieldMatch | None]) -> PlateRelative | None:
    """The plate's relative offset: the best shift of the fields' matches summed, and how many fields agree.

    Summing the fields' sums before looking for the peak weighs each field by how much it shows;
    it was closer to the truth than the median of the fields' own peaks where those are noisy (60x
    fields of 1024², plates of three fields; docs/alignment.md). The confidence is
    :func:`plate_agreement` of the fields' own peaks with it, and its :func:`bootstrap_error`.
    None if no field matched.
    """
    matches = list(matches)
    estimates = [best_offset(m) for m in matches]
    value = pooled_offset(matches)
    if value is None:
        found = [e for e in estimates if e is not None]
        if not found:
            return None
        # No peak inside the search for the sum: report the fields' median, claim nothing.
        median = np.median([(e.dy, e.dx) for e in found], axis=0)
        return replace(plate_agreement(float(median[0]), float(median[1]), estimates), confidence=0.0)
    return replace(plate_agreement(value.dy, value.dx, estimates), standard_error=bootstrap_error(matches))


def bootstrap_error(matches: Sequence[FieldMatch | None]) -> float | None:
    """Standard error (px, the larger axis) of :func:`pooled_offset` when the fields are drawn again.

    The fields that matched are resampled with replacement :data:`BOOTSTRAP_RESAMPLES` times (seed
    0) and each resample's sums give one pooled offset; their standard deviation per axis says how
    much the plate's offset would move with other fields of the same plate.

    Parameters
    ----------
    matches
        The fields' :func:`field_match` results (None: the field did not match; left out).

    Returns
    -------
    float or None
        The larger axis's standard deviation (px); infinite if a resample has no peak inside the
        search; None with fewer than :data:`MIN_BOOTSTRAP_FIELDS` matched fields.
    """
    found = [m for m in matches if m is not None]
    if len(found) < MIN_BOOTSTRAP_FIELDS:
        return None
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        value = pooled_offset([found[i] for i in rng.integers(0, len(found), len(found))])
        if value is None:
            return float("inf")
        draws.append((value.dy, value.dx))
    return float(np.std(np.asarray(draws), axis=0).max())


def describe_standard_error(relative: PlateRelative) -> str:
    """The standard error of a plate's relative offset in words, for ``vstain align``'s summary.

    Parameters
    ----------
    relative
        A :func:`plate_relative` result.

    Returns
    -------
    str
        E.g. ``"standard error 0.15 px"``.
    """
    if relative.standard_error is None:
        return f"too few fields for a standard error (fewer than {MIN_BOOTSTRAP_FIELDS})"
    return f"standard error {relative.standard_error:.2f} px"


def plate_agreement(dy: float, dx: float, estimates: Sequence[RelativeOffset | None]) -> PlateRelative:
    """``(dy, dx)`` with the share of the fields' own estimates within ``AGREE_PX`` (estimate.py) of it.

    A field without an estimate (None) counts as not agreeing, and fewer than
    :data:`MIN_AGREEING_FIELDS` agreeing fields give confidence 0: one field's match is no
    evidence that the cytoplasm shows the nuclei at all.
    """
    found = np.asarray([(e.dy, e.dx) for e in estimates if e is not None], dtype=np.float64).reshape(-1, 2)
    agree = int(np.sum(np.all(np.abs(found - (dy, dx)) <= AGREE_PX, axis=1)))
    confidence = agree / len(estimates) if estimates and agree >= MIN_AGREEING_FIELDS else 0.0
    return PlateRelative(float(dy), float(dx), confidence, len(found), agree, len(estimates))


def fields_relative(stains: Mapping[str, np.ndarray], magnification: str) -> dict[str, FieldMatch | None]:
    """:func:`field_match` of every stain of :data:`THROUGH` the field has, against the stain it goes through."""
    out = {}
    for stain, through in THROUGH.items():
        if stain in stains and through in stains:
            out[stain] = field_match(stains[stain], stains[through], magnification=magnification,
                                     lipids=stains.get("lipids"))
    return out


def _correlations(
    structure: np.ndarray, weight: np.ndarray, outlines: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Σ a M_s``, ``Σ w M_s``, ``Σ w M_s²`` (``M_s(p) = M(p + s)``), each ``|s| <= radius``: ``(2r+1, 2r+1)``."""
    from scipy import fft

    shape = structure.shape
    rows = np.r_[shape[0] - radius : shape[0], 0 : radius + 1]
    cols = np.r_[shape[1] - radius : shape[1], 0 : radius + 1]
    # ifft(conj(F x) F y)[s] = Σ_p x(p) y(p + s), circularly; equal to the plain sum because x
    # (the structure, the weight) is zero within ``radius`` of the border.
    f_structure, f_weight = (np.conj(fft.rfft2(x, workers=1)) for x in (structure, weight))
    f_outlines, f_squares = (fft.rfft2(y, workers=1) for y in (outlines, outlines**2))
    return tuple(fft.irfft2(x * y, s=shape, workers=1)[np.ix_(rows, cols)].astype(np.float64)
                 for x, y in ((f_structure, f_outlines), (f_weight, f_outlines), (f_weight, f_squares)))


def _quadratic_peak(values: np.ndarray) -> tuple[float, float] | None:
    """Subpixel ``(dy, dx)`` (within ±1) of the maximum of a quadratic fitted to a 3x3 neighbourhood."""
    ys, xs = (g.ravel() for g in np.mgrid[-1:2, -1:2])
    design = np.stack([np.ones(9), ys, xs, ys**2, xs**2, ys * xs], axis=1)
    c = np.linalg.lstsq(design, values.ravel(), rcond=None)[0]
    hessian = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.linalg.det(hessian) <= 0 or hessian[0, 0] >= 0:  # not a maximum
        return None
    step = -np.linalg.solve(hessian, c[1:3])
    return (float(np.clip(step[0], -1, 1)), float(np.clip(step[1], -1, 1)))
