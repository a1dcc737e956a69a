"""Brightfield image formation: a thin phase/absorption object seen through a defocused objective.

The specimen multiplies the illuminating wave by ``exp(-a/2 + i·phi)``; the wave is propagated to
each focal plane with the angular-spectrum method (exact scalar free-space transfer function,
cut off at the objective's NA), and the camera records ``|u|^2``. Partially coherent (Köhler)
illumination from a condenser of numerical aperture ``NA_c`` is approximated by blurring each
plane's intensity with a Gaussian whose width grows with defocus, ``sigma ≈ |z|·tan(theta_c)/2``:
the incoherent sum of the images seen from every illumination angle.

Lipid droplets are thick, strongly refracting spheres (Δn ≈ 0.13). A thin-object phase that
large cannot be sampled at these pixel sizes, so the model uses an *effective* index step
(``lipid_index_step``) that keeps the phase gradient sampleable; the droplets still act as
lenses and flip from bright to dark through focus, as in real stacks.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from vstain.synth.parameters import SynthParameters
from vstain.synth.specimen import Specimen
from vstain.vocabulary import N_PLANES


def plane_positions_um(params: SynthParameters, *, focus_offset_um: float = 0.0) -> np.ndarray:
    """Defocus of planes Z01..Z07 in µm (Z04 nearest focus; negative = below the specimen)."""
    planes = np.arange(N_PLANES) - (N_PLANES - 1) / 2
    return planes * params.plane_step_um + focus_offset_um


def transmission(specimen: Specimen, params: SynthParameters) -> np.ndarray:
    """Complex amplitude transmission ``exp(-a/2 + i·phi)`` of the specimen (complex64)."""
    k0 = 2 * np.pi / params.wavelength_um
    phase = k0 * (
        params.lipid_index_step * specimen.droplet_thickness
        + params.nucleus_index_step * specimen.nucleus_thickness
        + params.cytoplasm_index_step * specimen.cytoplasm_thickness
    )
    absorbance = (
        params.lipid_absorption_per_um * specimen.droplet_thickness
        + params.nucleus_absorption_per_um * specimen.nucleus_thickness
        + params.cytoplasm_absorption_per_um * specimen.cytoplasm_thickness
        + 1.5 * specimen.debris
    )
    out = np.empty(phase.shape, dtype=np.complex64)
    out.real = np.cos(phase)
    out.imag = np.sin(phase)
    out *= np.exp(-0.5 * absorbance).astype(np.float32)
    return out


def defocus_stack(field: np.ndarray, *, pixel_size_um: float, defocus_um: np.ndarray,
                  params: SynthParameters) -> np.ndarray:
    """Intensity images ``(len(defocus_um), H, W)`` float32 of ``field`` at each defocus.

    ``field`` is the complex transmission on a grid whose sides are FFT-friendly; the result is
    periodic, so callers keep a margin wider than the defocus blur and crop it away.
    """
    rows, cols = field.shape
    fy = sfft.fftfreq(rows, d=pixel_size_um).astype(np.float32)
    fx = sfft.fftfreq(cols, d=pixel_size_um).astype(np.float32)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    n_over_lambda = params.medium_index / params.wavelength_um
    pupil = f2 <= (params.objective_na / params.wavelength_um) ** 2
    # Axial wavenumber minus the carrier (a global phase that the camera cannot see).
    kz = (2 * np.pi * (np.sqrt(np.clip(n_over_lambda**2 - f2, 0.0, None)) - n_over_lambda)).astype(np.float32)
    spectrum = sfft.fft2(field, workers=1)
    tan_condenser = np.tan(np.arcsin(min(params.condenser_na / params.medium_index, 0.99)))
    rfx = sfft.rfftfreq(cols, d=pixel_size_um).astype(np.float32)
    rf2 = fy[:, None] ** 2 + rfx[None, :] ** 2
    # Residual blur in focus: the condenser's own resolution limit, plus any aberration blur.
    sigma_focus = np.hypot(0.25 * params.wavelength_um / (params.objective_na + params.condenser_na),
                           params.brightfield_blur_um)
    stack = np.empty((len(defocus_um), rows, cols), dtype=np.float32)
    inside = np.nonzero(pupil)  # everything outside the pupil stays zero: skip it
    kz_in = kz[inside]
    spectrum_in = spectrum[inside]
    propagated = np.zeros_like(spectrum)
    for i, z in enumerate(defocus_um):
        angle = kz_in * np.float32(z)
        propagated[inside] = spectrum_in * (np.cos(angle) + 1j * np.sin(angle)).astype(np.complex64)
        wave = sfft.ifft2(propagated, workers=1)
        intensity = np.abs(wave)
        intensity *= intensity
        sigma = np.hypot(sigma_focus, abs(z) * tan_condenser / 2)
        blur = np.exp(-2 * np.pi**2 * sigma**2 * rf2).astype(np.float32)
        stack[i] = sfft.irfft2(sfft.rfft2(intensity, workers=1) * blur, s=(rows, cols), workers=1)
    return stack


def defocus_reach_um(params: SynthParameters) -> float:
    """How far (µm) light spreads sideways over the deepest plane: the margin the canvas needs."""
    sin_objective = min(params.objective_na / params.medium_index, 0.99)
    z_max = plane_positions_um(params).max() + abs(params.focus_offset_um) + 3 * params.focus_jitter_um
    return float(z_max * np.tan(np.arcsin(sin_objective)))


def vignetting(shape: tuple[int, int], *, full_shape: tuple[int, int], strength: float) -> np.ndarray:
    """Relative illumination ``1 - strength·(r / r_corner)^2`` of a crop centred in a full field."""
    rows = np.arange(shape[0], dtype=np.float32) - (shape[0] - 1) / 2
    cols = np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2
    corner2 = (full_shape[0] / 2) ** 2 + (full_shape[1] / 2) ** 2
    r2 = rows[:, None] ** 2 + cols[None, :] ** 2
    return (1.0 - strength * r2 / corner2).astype(np.float32)


def tilt(shape: tuple[int, int], *, full_shape: tuple[int, int], gradient: float, angle_deg: float) -> np.ndarray:
    """Relative illumination ``1 + gradient·u`` of a crop centred in a full field (float32).

    ``u`` is the position along the direction ``angle_deg`` (0: towards +x, i.e. right; 90:
    towards +y, i.e. down) divided by the full field's diagonal, so ``u`` lies in [-0.5, 0.5] and
    ``gradient`` is the peak-to-peak change of the light along that line through the whole field.
    """
    rows = np.arange(shape[0], dtype=np.float32) - (shape[0] - 1) / 2
    cols = np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2
    diagonal = float(np.hypot(*full_shape))
    angle = np.deg2rad(angle_deg)
    u = (rows[:, None] * np.float32(np.sin(angle)) + cols[None, :] * np.float32(np.cos(angle))) / diagonal
    return (1.0 + np.float32(gradient) * u).astype(np.float32)


def illumination(shape: tuple[int, int], *, full_shape: tuple[int, int], vignetting_strength: float,
                 gradient: float, angle_deg: float) -> np.ndarray:
    """Vignetting times a linear tilt: the relative light over a crop centred in a full field."""
    light = vignetting(shape, full_shape=full_shape, strength=vignetting_strength)
    if gradient:
        light *= tilt(shape, full_shape=full_shape, gradient=gradient, angle_deg=angle_deg)
    return light


def gaussian_blur(image: np.ndarray, *, sigmas_px: tuple[float, ...], weights: tuple[float, ...],
                  shift_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``image`` convolved with a weighted sum of Gaussians (periodic boundary, via FFT), float32.

    With ``shift_px = (dy, dx)`` the result is also sampled at ``(y + dy, x + dx)``: a phase
    ramp in the same transform (exact for a band-limited image; the blur makes it one).
    """
    rows, cols = image.shape
    fy = sfft.fftfreq(rows).astype(np.float32)
    fx = sfft.rfftfreq(cols).astype(np.float32)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    transfer = np.zeros(f2.shape, dtype=np.float32)
    for sigma, weight in zip(sigmas_px, weights):
        transfer += np.float32(weight) * np.exp(-2 * np.pi**2 * sigma**2 * f2).astype(np.float32)
    spectrum = sfft.rfft2(image.astype(np.float32, copy=False), workers=1)
    spectrum *= transfer
    dy, dx = shift_px
    if dy or dx:
        # f(n + d) <-> F(k)·exp(+2πi k·d); separable, so two 1-D ramps.
        spectrum *= np.exp(2j * np.pi * np.float64(dy) * fy).astype(np.complex64)[:, None]
        spectrum *= np.exp(2j * np.pi * np.float64(dx) * fx).astype(np.complex64)[None, :]
    return sfft.irfft2(spectrum, s=(rows, cols), workers=1).astype(np.float32)
