"""Moving images between the brightfield frame and a stain's frame by a subpixel offset.

Bilinear interpolation with reflected borders (OpenCV's ``warpAffine``), the interpolation the
training crops' augmentation uses (:mod:`vstain.data.augment`), so an aligned target is
resampled exactly as an augmented one. Offsets follow the sign convention of
:mod:`vstain.alignment.estimate`: a structure at brightfield ``(y, x)`` is at stain
``(y - dy, x - dx)``.
"""

from __future__ import annotations

import cv2
import numpy as np


def translate(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``out[y, x] = image[y - dy, x - dx]`` (bilinear, reflected borders), float32.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(C, H, W)``, any numeric dtype.
    dy, dx
        The translation in pixels (content moves down/right for positive values).
    """
    array = np.asarray(image, dtype=np.float32)
    if dy == 0 and dx == 0:
        return array.copy()
    if array.ndim == 3:
        return np.stack([translate(plane, dy, dx) for plane in array])
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float64)
    height, width = array.shape
    return cv2.warpAffine(array, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def to_brightfield_frame(stain: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """The stain resampled into the brightfield frame: ``out[p] = stain[p - offset]`` (float32)."""
    return translate(stain, offset[0], offset[1])


def to_fluorescence_frame(image: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """A brightfield-frame image (e.g. a prediction) moved into the stain's frame: ``out[q] = image[q + offset]``."""
    return translate(image, -offset[0], -offset[1])
