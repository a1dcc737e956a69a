"""The camera: Poisson photon noise, Gaussian read noise, offset, 16-bit quantisation and saturation."""

from __future__ import annotations

import numpy as np

#: Above this many photo-electrons the Poisson law is replaced by its Gaussian limit (same mean
#: and variance; the skew left out is below 1/sqrt(30) of a standard deviation), which is ~5x faster.
GAUSSIAN_LIMIT = 30.0


def expose(expected: np.ndarray, rng: np.random.Generator, *, offset: float, gain: float,
           read_noise: float) -> np.ndarray:
    """Record ``expected`` raw counts (offset included) as a noisy uint16 image.

    Counts above ``offset`` are photo-electrons times ``gain``: Poisson-distributed (Gaussian
    with the Poisson variance above :data:`GAUSSIAN_LIMIT` electrons). Read noise is Gaussian with
    standard deviation ``read_noise`` counts. Values are rounded and clipped to 0..65535, so very
    bright objects saturate as on the real camera.
    """
    mean = np.clip(np.asarray(expected, dtype=np.float32) - np.float32(offset), 0.0, None) / np.float32(gain)
    electrons = mean + np.sqrt(mean) * rng.standard_normal(mean.shape, dtype=np.float32)
    dim = mean < GAUSSIAN_LIMIT
    if np.any(dim):
        electrons[dim] = rng.poisson(mean[dim])
    counts = np.float32(offset) + np.float32(gain) * electrons
    counts += np.float32(read_noise) * rng.standard_normal(mean.shape, dtype=np.float32)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
