"""Widefield fluorescence of the three stains, in expected raw counts (before camera noise).

* C01 Hoechst binds DNA: textured nuclei with dark nucleoli.
* C02 BODIPY fills the neutral-lipid droplets: a droplet's focal section within the depth of field
  (so small droplets are dimmer) plus a bright rim on large droplets.
* C03 CellTracker Red fills the cytoplasm: it is excluded from droplets and thinner over the
  nucleus; occasional dead-cell debris takes up so much dye that it saturates the camera.

Each stain is blurred by the in-focus PSF plus an out-of-focus halo, sits on a background, and is
dimmed towards the corners by the same vignetting as the excitation light.
"""

from __future__ import annotations

import numpy as np

from vstain.synth.optics import gaussian_blur
from vstain.synth.parameters import SynthParameters
from vstain.synth.specimen import Specimen


def stain_counts(
    specimen: Specimen,
    params: SynthParameters,
    *,
    window: tuple[slice, slice] = (slice(None), slice(None)),
    illumination: np.ndarray | float = 1.0,
) -> dict[str, np.ndarray]:
    """Expected counts ``{nuclei, lipids, cytoplasm}`` (float32) of ``specimen``.

    The stains are blurred on the whole canvas, then cut to ``window``; ``illumination`` (the
    vignetting, shaped like the window) dims the excitation, hence the signal above background.
    """
    in_nucleus = np.clip(specimen.nucleus_thickness / 0.5, 0.0, 1.0)
    section = np.minimum(specimen.droplet_thickness, params.lipid_depth_of_field_um) / params.lipid_depth_of_field_um
    lipid = section + params.lipid_rim * specimen.droplet_rim + 0.02 * specimen.cytoplasm_thickness
    cytoplasm = (
        specimen.cytoplasm_loading
        * specimen.cytoplasm_thickness / float(np.mean(params.cytoplasm_thickness_um))
        * (1.0 - (1.0 - params.cytoplasm_over_nucleus) * in_nucleus)
    )
    signals = {
        "nuclei": (params.nucleus_counts, params.nuclei_background, specimen.chromatin),
        "lipids": (params.lipid_counts, params.lipids_background, lipid),
        "cytoplasm": (params.cytoplasm_counts, params.cytoplasm_background,
                      cytoplasm + specimen.debris * (params.debris_peak_counts / params.cytoplasm_counts)),
    }
    sigmas = (params.px(params.fluorescence_blur_um), params.px(params.haze_blur_um))
    weights = (1.0 - params.haze_fraction, params.haze_fraction)
    counts = {}
    for target, (level, background, signal) in signals.items():
        blurred = gaussian_blur(np.float32(level) * signal, sigmas_px=sigmas, weights=weights)[window]
        counts[target] = (np.float32(background) + blurred * illumination).astype(np.float32)
    return counts
