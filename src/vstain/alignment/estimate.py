"""Subpixel offset of one stain against the brightfield stack of the same field.

The brightfield and a stain are different modalities, so the stain is registered against a
*reference image* computed from the brightfield stack (:func:`reference_image`):

* ``plane``: one brightfield plane (Z04, the middle of the stack, by default);
* ``zdiff``: the last plane minus the first (Z07 - Z01), the through-focus derivative in which
  transparent (phase) objects such as nuclei show;
* ``zstd``: the standard deviation over the 7 planes at each pixel. Droplets, nuclei and cell
  edges change with focus, flat background does not, so this is bright where stains have
  structure, whatever the sign of the brightfield contrast;
* ``prediction``: a linear prediction of the stain from brightfield features (the planes and
  their local contrast), fitted by least squares on the field itself and refitted once at the
  first estimate: a stain-like image, the same modality as the stain.

Which one is accurate is measured, not assumed (docs/alignment.md gives the numbers).

Sign convention (the one of ``vstain synth``'s ``plate.json``, docs/synthetic-data.md): an offset
``(dy, dx)`` means that a structure at brightfield pixel ``(y, x)`` is at stain pixel
``(y - dy, x - dx)``. It is what scikit-image's ``phase_cross_correlation(reference, stain)``
returns, and the stain moves into the brightfield frame by shifting it by ``+(dy, dx)``
(:func:`vstain.alignment.resample.to_brightfield_frame`).

The field is cut into tiles; each tile gives an offset (phase correlation with upsampling); the
field's offset is the median over tiles and its *confidence* is the fraction of tiles that agree
with that median to within :data:`AGREE_PX`. A blank or featureless stain gives tiles that
disagree, hence a low confidence, never a confident wild offset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Mapping, get_args

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

Reference = Literal["zstd", "zdiff", "plane", "prediction"]
REFERENCES: tuple[str, ...] = get_args(Reference)

#: Tiles whose offset is within this many pixels (per axis) of the field's median agree with it.
AGREE_PX = 0.5
#: Side of the square tiles, in pixels (smaller fields use one tile of their size).
TILE_PX = 512
#: Upsampling of the cross-correlation peak: offsets are resolved to 1/UPSAMPLE px.
UPSAMPLE = 10
#: Offsets larger than this (px per axis) are not searched for: a bigger peak is taken as noise.
MAX_OFFSET_PX = 16.0
#: Band-pass of the correlation (difference of Gaussians, px): drops pixel noise and illumination.
FINE_SIGMA = 1.5
COARSE_SIGMA = 12.0
#: Plain (not phase-normalised) cross-correlation: phase normalisation weights every frequency
#: equally, including the noise-dominated ones that two modalities do not share (measured worse).
NORMALIZATION = None


@dataclass(frozen=True)
class Offset:
    """A measured offset of a stain against the brightfield, in pixels (see the module's sign convention).

    Attributes
    ----------
    dy, dx
        Median over the tiles.
    confidence
        Fraction of the tiles that agree with the median to within :data:`AGREE_PX`, in [0, 1].
    tiles
        How many tiles were measured.
    """

    dy: float
    dx: float
    confidence: float
    tiles: int


def reference_image(brightfield: np.ndarray, *, kind: Reference = "zstd", plane: int = 4) -> np.ndarray:
    """The image a stain is registered against, computed from a ``(7, H, W)`` brightfield stack.

    Parameters
    ----------
    brightfield
        The z-stack, any numeric dtype.
    kind
        ``zstd`` (standard deviation over the planes) or ``plane`` (one plane). ``prediction``
        depends on the stain: see :func:`predict_stain`.
    plane
        Which plane (1-7) ``plane`` uses.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32.
    """
    stack = np.asarray(brightfield, dtype=np.float32)
    if kind == "zstd":
        # Relative to each plane's mean, so plane-to-plane brightness drift does not count as structure.
        stack = stack / np.maximum(stack.mean(axis=(1, 2), keepdims=True), 1e-6)
        return stack.std(axis=0)
    if kind == "zdiff":
        # Above minus below focus: the through-focus derivative, where phase objects (nuclei,
        # cytoplasm) show as their curvature (transport of intensity), whatever their absorption.
        stack = stack / np.maximum(stack.mean(axis=(1, 2), keepdims=True), 1e-6)
        return stack[-1] - stack[0]
    if kind == "plane":
        return stack[plane - 1]
    raise ValueError(f"reference {kind!r} is computed per stain (predict_stain) or unknown; expected zstd or plane")


def brightfield_features(brightfield: np.ndarray, *, sigma: float = 3.0) -> np.ndarray:
    """Features a linear stain prediction is built from: each plane and its local contrast.

    Returns ``(planes + 4, H, W)`` float32: the planes (relative to their mean), the local mean
    absolute deviation of the first, middle and last planes at scale ``sigma`` px, and a constant.
    """
    brightfield = np.asarray(brightfield)
    planes = brightfield.shape[0]
    # Written in place into one array: a full field's features are ~240 MB, and the temporaries of
    # that size cost page faults (a full 20x field 0.67-1.30 s with them, 0.59-0.64 s without;
    # docs/alignment.md).
    features = np.empty((planes + 4, *brightfield.shape[1:]), np.float32)
    stack = features[:planes]
    stack[...] = brightfield
    stack /= np.maximum(stack.mean(axis=(1, 2), keepdims=True), 1e-6)
    # Local contrast of the first, middle and last planes only: the others add little and cost
    # most of the time (measured in docs/alignment.md).
    outer = [0, planes // 2, planes - 1]
    deviation = ndimage.gaussian_filter(stack[outer], (0, sigma, sigma), truncate=3.0)
    np.subtract(stack[outer], deviation, out=deviation)
    np.abs(deviation, out=deviation)
    ndimage.gaussian_filter(deviation, (0, sigma, sigma), truncate=3.0, output=features[planes : planes + 3])
    features[planes + 3] = 1
    return features


def predict_stain(
    features: np.ndarray, stain: np.ndarray, *, offset: tuple[float, float] = (0.0, 0.0),
    samples: int = 50_000, seed: int = 0,
) -> np.ndarray:
    """Least-squares linear prediction of ``stain`` from ``features`` (:func:`brightfield_features`).

    The fit pairs brightfield pixel ``p`` with stain pixel ``p - offset`` (rounded), so a rough
    offset estimate makes the fit sharper. Fitted on ``samples`` random pixels away from the
    border; returns the ``(H, W)`` float32 prediction in the brightfield frame.
    """
    height, width = stain.shape
    rng = np.random.default_rng(seed)
    dy, dx = (int(round(v)) for v in offset)
    margin = int(MAX_OFFSET_PX) + 1
    if height <= 2 * margin or width <= 2 * margin:
        margin = 0
    ys = rng.integers(margin, height - margin, samples)
    xs = rng.integers(margin, width - margin, samples)
    design = features[:, ys, xs].T.astype(np.float64)
    values = np.asarray(stain, dtype=np.float64)[np.clip(ys - dy, 0, height - 1), np.clip(xs - dx, 0, width - 1)]
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    return np.tensordot(coefficients.astype(np.float32), features, axes=1)


def tile_origins(shape: tuple[int, int], tile: int = TILE_PX) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``tile``-sided tiles that cover ``shape`` (centred)."""
    origins = []
    for axis_length in shape:
        count = max(axis_length // tile, 1)
        size = min(tile, axis_length)
        start = (axis_length - count * size) // 2
        origins.append([start + i * size for i in range(count)])
    return [(y, x) for y in origins[0] for x in origins[1]]


def estimate_offset(
    reference: np.ndarray, stain: np.ndarray, *, tile: int = TILE_PX, upsample: int = UPSAMPLE
) -> Offset:
    """Offset of ``stain`` against ``reference`` (both ``(H, W)``, the same shape): median over tiles.

    Parameters
    ----------
    reference
        An image in the brightfield frame (:func:`reference_image`, :func:`predict_stain`).
    stain
        The fluorescence image, any numeric dtype.
    tile
        Tile side in pixels.
    upsample
        Upsampling factor of the correlation peak (resolution ``1 / upsample`` px).

    Returns
    -------
    Offset
        ``dy, dx`` as in the module's sign convention, with the tiles' agreement as confidence.
        A stain without any structure (constant) gives ``(0, 0)`` with confidence 0.
    """
    reference = np.asarray(reference, dtype=np.float32)
    stain = np.asarray(stain, dtype=np.float32)
    if reference.shape != stain.shape:
        raise ValueError(f"reference {reference.shape} and stain {stain.shape} differ in shape")
    whole = _correlate(reference, stain, upsample)
    # At least 2 x 2 tiles, so that agreement means something on small fields.
    size = max(min(tile, min(stain.shape) // 2), 16)
    origins = tile_origins(stain.shape, size)
    found = [_correlate(reference[top : top + size, left : left + size], stain[top : top + size, left : left + size],
                        upsample) for top, left in origins]
    if whole is None:
        return Offset(0.0, 0.0, 0.0, len(origins))
    agree = sum(f is not None and bool(np.all(np.abs(f - whole) <= AGREE_PX)) for f in found)
    return Offset(float(whole[0]), float(whole[1]), agree / len(origins), len(origins))


def _correlate(reference: np.ndarray, stain: np.ndarray, upsample: int) -> np.ndarray | None:
    """Cross-correlation offset of two same-shaped images (band-passed), or None where there is nothing to correlate."""
    if np.ptp(reference) == 0 or np.ptp(stain) == 0:
        return None
    from scipy import fft

    # A centred crop to FFT-friendly sides: a full 20x field is 2154 x 2554 = (2·3·359) x (2·1277),
    # whose prime factors make every transform 2-3x slower than at 2112 x 2541. The few pixels
    # cut lie where the Hann window is ~0, and both images lose the same ones, so the offset
    # between them is unchanged.
    shape = tuple(fast_length(n) for n in stain.shape)
    top, left = ((n - m) // 2 for n, m in zip(stain.shape, shape))
    reference = reference[top : top + shape[0], left : left + shape[1]]
    stain = stain[top : top + shape[0], left : left + shape[1]]
    window, band = _window_and_band(shape)
    a = fft.fft2((reference - reference.mean()) * window, workers=1)
    b = fft.fft2((stain - stain.mean()) * window, workers=1)
    shift, _, _ = phase_cross_correlation(a * band, b, upsample_factor=upsample, normalization=NORMALIZATION,
                                          space="fourier")
    if not np.all(np.isfinite(shift)) or np.any(np.abs(shift) > MAX_OFFSET_PX):
        return None
    return np.asarray(shift, dtype=np.float64)


def fast_length(n: int) -> int:
    """The largest length <= ``n`` whose FFT is fast (only factors 2, 3, 5, 7, 11: scipy's ``next_fast_len``)."""
    from scipy import fft

    m = n
    while m > 1 and fft.next_fast_len(m) != m:
        m -= 1
    return m


@functools.lru_cache(maxsize=8)
def _window_and_band(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Hann window and Fourier band-pass of an image of ``shape`` (float32; cached: a plate's fields share them)."""
    from scipy import fft

    # The Hann window stops the image borders from correlating with each other.
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)
    # Band-pass in the Fourier domain (a difference of Gaussians, applied once to the product):
    # keeps the scales at which brightfield and stains share structure and drops pixel noise and
    # illumination gradients.
    ky = fft.fftfreq(shape[0])[:, None]
    kx = fft.fftfreq(shape[1])[None, :]
    k2 = (2 * np.pi) ** 2 * (ky**2 + kx**2)
    band = (np.exp(-0.5 * FINE_SIGMA**2 * k2) - np.exp(-0.5 * COARSE_SIGMA**2 * k2)).astype(np.float32)
    window.flags.writeable = False
    band.flags.writeable = False
    return window, band


def bin_blocks(array: np.ndarray, factor: int = 2) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` pixel blocks of the last two axes (float32 or wider; rows and
    columns beyond whole blocks dropped).
    """
    height, width = array.shape[-2] // factor * factor, array.shape[-1] // factor * factor
    array = array[..., :height, :width]
    # factor² strided sums, not a reshape-and-mean: numpy's reduction over interleaved axes is several
    # times slower, and this runs on every brightfield feature of a field.
    total = array[..., 0::factor, 0::factor].astype(np.result_type(array.dtype, np.float32))
    for dy in range(factor):
        for dx in range(factor):
            if dy or dx:
                total += array[..., dy::factor, dx::factor]
    total *= 1.0 / factor**2
    return total


class _CoarseSearch:
    """Integer offset (within ``radius``) at which a linear combination of ``features`` best explains a stain.

    For every shift ``s`` the least-squares fit of ``stain(p - s)`` on the features ``F(p)`` explains
    ``R²(s) = c(s)ᵀ S⁻¹ c(s) / |stain|²`` of the stain's variance, where ``c_k(s)`` is the
    cross-correlation of feature ``k`` with the stain (one FFT each) and ``S`` the features' Gram
    matrix. The features' spectra and Gram matrix are computed once per field, for all its stains;
    :meth:`offset` returns the best shift and its ``R²``.
    """

    def __init__(self, features: np.ndarray, radius: int) -> None:
        from scipy import fft

        # FFT-friendly sides (as in _correlate): a binned full 20x field is 1077 x 1277, both
        # with a large prime factor. The circular correlation is computed on the crop alone.
        shape = tuple(fast_length(n) for n in features.shape[-2:])
        top, left = ((n - m) // 2 for n, m in zip(features.shape[-2:], shape))
        self._crop = (slice(top, top + shape[0]), slice(left, left + shape[1]))
        feats = np.asarray(features[(slice(None), *self._crop)], dtype=np.float32)
        feats = feats - feats.mean(axis=(1, 2), keepdims=True)
        self._spectra = fft.rfft2(feats, workers=1)
        self._pinv = np.linalg.pinv(np.tensordot(feats, feats, axes=([1, 2], [1, 2])).astype(np.float64))
        self._shape = shape
        self._radius = radius

    def offset(self, stain: np.ndarray) -> tuple[tuple[int, int], float]:
        from scipy import fft

        target = np.asarray(stain[self._crop], dtype=np.float32)
        target = target - target.mean()
        shape, radius = self._shape, self._radius
        cross = fft.irfft2(self._spectra * np.conj(fft.rfft2(target, workers=1))[None], s=shape, workers=1)
        rows = np.r_[0 : radius + 1, shape[0] - radius : shape[0]]
        cols = np.r_[0 : radius + 1, shape[1] - radius : shape[1]]
        cross = np.fft.fftshift(cross[:, rows][:, :, cols], axes=(1, 2))  # index radius = shift 0
        explained = np.einsum("kyx,kl,lyx->yx", cross, self._pinv, cross) / max(float((target**2).sum()), 1e-12)
        iy, ix = np.unravel_index(int(np.argmax(explained)), explained.shape)
        # cross[k, s] = sum_p F_k(p + s) T(p): the stain pixel p goes with the brightfield pixel p + s, so d = s.
        return (int(iy) - radius, int(ix) - radius), float(explained.max())


def estimate_field(
    brightfield: np.ndarray,
    stains: Mapping[str, np.ndarray],
    *,
    reference: Reference = "prediction",
    tile: int = TILE_PX,
    upsample: int = UPSAMPLE,
) -> dict[str, Offset]:
    """Offsets of each stain of a field against its ``(7, H, W)`` brightfield stack.

    Parameters
    ----------
    brightfield
        The z-stack.
    stains
        Stain name -> ``(H, W)`` image.
    reference
        What the stains are correlated with (module docstring).
    tile, upsample
        As in :func:`estimate_offset`.
    """
    if reference == "prediction":
        features = brightfield_features(brightfield)
        search = _CoarseSearch(bin_blocks(features[:-1]), radius=int(MAX_OFFSET_PX) // 2 + 1)
        offsets = {}
        for name, stain in stains.items():
            binned_stain = bin_blocks(np.asarray(stain, dtype=np.float32))
            (cy, cx), _ = search.offset(binned_stain)
            # The fit at the coarse (2 px) guess, correlated once, gives a finer guess; the fit
            # there is sharper, and its correlation is the estimate. The guess only picks the whole
            # pixel the fit pairs pixels at, so it is correlated on 2x2-binned images (a quarter of
            # the cost of the whole-field correlation).
            stain32 = np.asarray(stain, dtype=np.float32)
            first = predict_stain(features, stain32, offset=(2.0 * cy, 2.0 * cx))
            guess = _correlate(bin_blocks(first), binned_stain, upsample)
            guess = (2.0 * cy, 2.0 * cx) if guess is None else (2.0 * float(guess[0]), 2.0 * float(guess[1]))
            offsets[name] = estimate_offset(predict_stain(features, stain32, offset=guess), stain32,
                                            tile=tile, upsample=upsample)
        return offsets
    image = reference_image(brightfield, kind=reference)
    return {name: estimate_offset(image, stain, tile=tile, upsample=upsample) for name, stain in stains.items()}
