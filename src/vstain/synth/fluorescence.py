"""Widefield fluorescence of the three stains, in expected raw counts (before camera noise).

* C01 Hoechst binds DNA: textured nuclei with dark nucleoli (and bright chromocenters if asked).
* C02 BODIPY fills the neutral-lipid droplets: a droplet's focal section within the depth of field
  (so small droplets are dimmer; weighted by ``lipid_fill``) plus a bright rim on large droplets
  (``lipid_rim``). A small ``lipid_fill`` turns filled disks into rings.
* C03 CellTracker Red fills the cytoplasm: it is excluded from droplets and thinner over the
  nucleus. With ``cytoplasm_fill`` 0 its signal follows the cytoplasm's height (a dome per cell);
  towards 1 the dye fills the whole cell body evenly, so the culture is bright almost everywhere
  with dark holes at the droplets and nuclei. Occasional dead-cell debris takes up so much dye
  that it saturates the camera.

Each stain is blurred by the in-focus PSF plus an out-of-focus halo, sits on a background, and is
dimmed by its own illumination (vignetting and tilt). Each stain is sampled at its own
misregistration (:mod:`vstain.synth.misregistration`): the translation is a phase ramp applied
in the same Fourier transform as the blur (exact for these band-limited images), the optional
scale difference a cubic-spline resampling of the blurred image; both before camera noise.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import ndimage

from vstain.synth.optics import gaussian_blur
from vstain.synth.parameters import SynthParameters
from vstain.synth.specimen import Specimen


def stain_signals(specimen: Specimen, params: SynthParameters) -> dict[str, np.ndarray]:
    """Dye per pixel of each stain in raw counts above background, before blur (float32)."""
    in_nucleus = np.clip(specimen.nucleus_thickness / 0.5, 0.0, 1.0)
    section = np.minimum(specimen.droplet_thickness, params.lipid_depth_of_field_um) / params.lipid_depth_of_field_um
    lipid = params.lipid_fill * section + params.lipid_rim * specimen.droplet_rim + 0.02 * specimen.cytoplasm_thickness
    body = specimen.cytoplasm_thickness / float(np.mean(params.cytoplasm_thickness_um))
    if params.cytoplasm_fill > 0 and specimen.cell_body is not None:
        body = (1.0 - params.cytoplasm_fill) * body + params.cytoplasm_fill * specimen.cell_body
    cytoplasm = specimen.cytoplasm_loading * body * (1.0 - (1.0 - params.cytoplasm_over_nucleus) * in_nucleus)
    debris = specimen.debris * np.float32(params.debris_peak_counts)
    return {
        "nuclei": np.float32(params.nucleus_counts) * specimen.chromatin,
        "lipids": np.float32(params.lipid_counts) * lipid,
        "cytoplasm": np.float32(params.cytoplasm_counts) * cytoplasm + debris,
    }


def stain_counts(
    specimen: Specimen,
    params: SynthParameters,
    *,
    window: tuple[slice, slice] = (slice(None), slice(None)),
    illumination: Mapping[str, np.ndarray | float] | np.ndarray | float = 1.0,
    offsets: Mapping[str, tuple[float, float]] | None = None,
    scale: float = 0.0,
) -> dict[str, np.ndarray]:
    """Expected counts ``{nuclei, lipids, cytoplasm}`` (float32, window-shaped) of ``specimen``.

    Parameters
    ----------
    specimen, params
        What is where, and the stain levels, blur and backgrounds.
    window
        The field's crop of the canvas (the brightfield frame).
    illumination
        Relative excitation per stain (window-shaped array or a number), or one for all stains;
        it dims the signal above background.
    offsets
        Per stain ``(dy, dx)`` in pixels: a structure at brightfield pixel ``(y, x)`` appears at
        ``(y - dy, x - dx)`` of that stain (see :mod:`vstain.synth.misregistration`). Default none.
    scale
        Relative magnification of the stains against the brightfield, about the window's centre.
    """
    sigmas = (params.px(params.fluorescence_blur_um), params.px(params.haze_blur_um))
    weights = (1.0 - params.haze_fraction, params.haze_fraction)
    backgrounds = {"nuclei": params.nuclei_background, "lipids": params.lipids_background,
                   "cytoplasm": params.cytoplasm_background}
    counts = {}
    for target, signal in stain_signals(specimen, params).items():
        dy, dx = (offsets or {}).get(target, (0.0, 0.0))
        # Sampling at centre + (q + d - centre) / (1 + s) = a translation by d / (1 + s), then a
        # pure scale about the centre.
        shift = (dy / (1.0 + scale), dx / (1.0 + scale))
        blurred = gaussian_blur(signal, sigmas_px=sigmas, weights=weights, shift_px=shift)
        blurred = blurred[window] if scale == 0 else _scaled(blurred, window, scale)
        light = illumination[target] if isinstance(illumination, Mapping) else illumination
        counts[target] = (np.float32(backgrounds[target]) + blurred * light).astype(np.float32)
    return counts


def _scaled(image: np.ndarray, window: tuple[slice, slice], scale: float) -> np.ndarray:
    """``window`` of ``image`` magnified by ``1 + scale`` about the window's centre (cubic spline).

    Output pixel ``q`` samples the canvas at ``start + c + (q - c) / (1 + scale)``; a diagonal
    matrix lets scipy resample each axis separately (one spline pre-filter, 4 taps per axis).
    """
    start = np.array([window[0].start or 0, window[1].start or 0], dtype=np.float64)
    shape = (window[0].stop - int(start[0]), window[1].stop - int(start[1]))
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    factor = 1.0 / (1.0 + scale)
    return ndimage.affine_transform(
        image, np.array([factor, factor]), offset=start + centre - factor * centre, output_shape=shape,
        order=3, mode="nearest", output=np.float32,
    )


def typical_nucleus_level(params: SynthParameters) -> float:
    """Mean C01 counts above background over a typical nucleus, in focus and fully lit.

    A disc of the mean nucleus area (``nucleus_diameter_um``, ``nucleus_aspect``) with the mean
    chromocenter gain, blurred like the stain: how much Hoechst signal the pipelines' threshold
    floor and brightness cap see. The wider the halo against the nucleus, the more light leaves it.
    """
    semi_major = 0.5 * float(np.mean(params.nucleus_diameter_um))
    radius_px = params.px(semi_major * np.sqrt(float(np.mean(params.nucleus_aspect))))
    haze_px = params.px(params.haze_blur_um)
    side = int(2 ** np.ceil(np.log2(2 * radius_px + 8 * haze_px + 8)))
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    disc = (np.hypot(yy, xx) <= radius_px).astype(np.float32)
    sigmas = (params.px(params.fluorescence_blur_um), haze_px)
    blurred = gaussian_blur(disc, sigmas_px=sigmas, weights=(1.0 - params.haze_fraction, params.haze_fraction))
    # Chromocenters (radius 0.4-0.9 µm, mean area ~1.37 µm²) add their share of the nucleus area.
    foci_area = float(np.mean(params.chromocenters_per_nucleus)) * 1.37
    nucleus_area = np.pi * semi_major**2 * float(np.mean(params.nucleus_aspect))
    gain = 1.0 + params.chromocenter_brightness * foci_area / nucleus_area
    return float(params.nucleus_counts * gain * blurred[disc > 0].mean())
