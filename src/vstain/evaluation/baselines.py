"""Two honest baselines a trained model must beat, fitted on the training fields only.

* :class:`MeanImageBaseline` — each stain predicted as its pixelwise mean over the training
  fields (the same image for every field, whatever the brightfield shows);
* :class:`LinearBaseline` — each stain predicted per pixel as a linear function of the 7
  brightfield planes and a Gaussian-smoothed copy of them (σ ≈ 2 px, so a pixel also sees its
  neighbourhood), fitted by least squares on a seeded random subsample of training pixels.

Both predict uint16 counts (rounded, clipped to 0-65535), as the real predictor does, and
:func:`write_baseline_predictions` writes them under the CV7000 target names so that
``vstain evaluate`` scores them exactly like a model's predictions. numpy/scipy only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence

import numpy as np
from scipy import ndimage

from vstain.errors import PlateError
from vstain.vocabulary import N_PLANES

__all__ = [
    "Baseline",
    "LinearBaseline",
    "MeanImageBaseline",
    "brightfield_features",
    "to_uint16",
    "write_baseline_predictions",
]

_UINT16_MAX = 65535


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Round to nearest and clip to 0-65535; returns uint16 (NaN becomes 0)."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    return np.clip(np.rint(values), 0, _UINT16_MAX).astype(np.uint16)


def brightfield_features(brightfield: np.ndarray, *, sigma: float = 2.0) -> np.ndarray:
    """Per-pixel regressors: the planes and their Gaussian-smoothed copies.

    Parameters
    ----------
    brightfield
        ``(P, H, W)`` z-stack (any numeric dtype).
    sigma
        Gaussian σ in pixels of the smoothed copy; 0 leaves the smoothed copy out.

    Returns
    -------
    np.ndarray
        ``(P, H, W)`` (``sigma=0``) or ``(2P, H, W)`` float64 array.
    """
    stack = np.asarray(brightfield, dtype=np.float64)
    if stack.ndim != 3:
        raise PlateError(f"expected a (planes, H, W) brightfield stack, got shape {stack.shape}")
    if sigma <= 0:
        return stack
    # Smooth within each plane only (σ 0 along z), reflecting at the borders.
    smooth = ndimage.gaussian_filter(stack, sigma=(0, sigma, sigma), mode="reflect")
    return np.concatenate([stack, smooth])


class Baseline(Protocol):
    """What the demo needs of a baseline: its stains and a prediction per field."""

    targets: tuple[str, ...]

    def predict(self, brightfield: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class MeanImageBaseline:
    """Each stain is its pixelwise mean over the training fields.

    ``images[target]`` is a float64 ``(H, W)`` image; :meth:`predict` ignores the brightfield.
    """

    images: Mapping[str, np.ndarray]

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.images)

    @classmethod
    def fit(cls, targets: Iterable[Mapping[str, np.ndarray]]) -> "MeanImageBaseline":
        """Average ``{target: (H, W) image}`` over training fields (all the same shape).

        Raises
        ------
        PlateError
            If no field is given, or fields differ in stains or shape.
        """
        sums: dict[str, np.ndarray] = {}
        n = 0
        for images in targets:
            if n and set(images) != set(sums):
                raise PlateError(f"training field {n + 1} has stains {sorted(images)}, expected {sorted(sums)}")
            for name, image in images.items():
                image = np.asarray(image, dtype=np.float64)
                if name not in sums:
                    sums[name] = np.zeros_like(image)
                elif sums[name].shape != image.shape:
                    raise PlateError(
                        f"training field {n + 1}: {name} is {image.shape}, others are {sums[name].shape}; "
                        "the mean-image baseline needs fields of one size"
                    )
                sums[name] += image
            n += 1
        if n == 0:
            raise PlateError("the mean-image baseline needs at least one training field")
        return cls({name: total / n for name, total in sums.items()})

    def predict(self, brightfield: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``{target: uint16 (H, W)}``: the training mean images (``brightfield`` only checks the size)."""
        if brightfield is not None:
            shape = np.shape(brightfield)[-2:]
            for name, image in self.images.items():
                if image.shape != shape:
                    raise PlateError(f"{name} mean image is {image.shape} but the field is {shape}")
        return {name: to_uint16(image) for name, image in self.images.items()}


@dataclass(frozen=True)
class LinearBaseline:
    """Each stain is ``features · coefficients + intercept`` per pixel (see :func:`brightfield_features`).

    ``coefficients[target]`` has one weight per feature, ``intercepts[target]`` is a float.
    """

    coefficients: Mapping[str, np.ndarray]
    intercepts: Mapping[str, float]
    sigma: float = 2.0

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.coefficients)

    @classmethod
    def fit(
        cls,
        fields: Iterable[tuple[np.ndarray, Mapping[str, np.ndarray]]],
        *,
        sigma: float = 2.0,
        pixels_per_field: int = 20_000,
        seed: int = 0,
    ) -> "LinearBaseline":
        """Least-squares fit on ``(brightfield (P, H, W), {target: (H, W)})`` training pairs.

        Parameters
        ----------
        fields
            Training fields: the stack and the stains to predict.
        sigma
            Gaussian σ (pixels) of the smoothed copy of the planes; 0 for planes only.
        pixels_per_field
            Random pixels drawn per field (all of them if the field is smaller).
        seed
            Seed of the pixel draw.
        """
        rng = np.random.default_rng(seed)
        rows: list[np.ndarray] = []
        values: dict[str, list[np.ndarray]] = {}
        names: list[str] | None = None
        for i, (brightfield, targets) in enumerate(fields):
            features = brightfield_features(brightfield, sigma=sigma)
            n_pixels = features.shape[1] * features.shape[2]
            if names is None:
                names = list(targets)
            elif set(targets) != set(names):
                raise PlateError(f"training field {i + 1} has stains {sorted(targets)}, expected {sorted(names)}")
            take = n_pixels if pixels_per_field >= n_pixels else pixels_per_field
            chosen = np.sort(rng.choice(n_pixels, size=take, replace=False))
            rows.append(features.reshape(features.shape[0], -1)[:, chosen].T)
            for name in names:
                image = np.asarray(targets[name], dtype=np.float64)
                if image.shape != features.shape[1:]:
                    raise PlateError(
                        f"training field {i + 1}: {name} is {image.shape}, brightfield is {features.shape[1:]}"
                    )
                values.setdefault(name, []).append(image.reshape(-1)[chosen])
        if names is None:
            raise PlateError("the linear baseline needs at least one training field")
        design = np.concatenate(rows)
        # Standardise the regressors so the least-squares problem is well conditioned; the
        # coefficients are mapped back to raw brightfield units afterwards.
        centre = design.mean(axis=0)
        spread = design.std(axis=0)
        spread[spread == 0] = 1.0
        design = np.column_stack([(design - centre) / spread, np.ones(len(design))])
        goals = np.column_stack([np.concatenate(values[name]) for name in names])
        solution, *_ = np.linalg.lstsq(design, goals, rcond=None)
        weights = solution[:-1] / spread[:, None]
        intercepts = solution[-1] - centre @ weights
        return cls(
            coefficients={name: weights[:, j] for j, name in enumerate(names)},
            intercepts={name: float(intercepts[j]) for j, name in enumerate(names)},
            sigma=sigma,
        )

    def predict_float(self, brightfield: np.ndarray) -> dict[str, np.ndarray]:
        """``{target: float64 (H, W)}`` before rounding (for tests and diagnostics)."""
        features = brightfield_features(brightfield, sigma=self.sigma)
        expected = len(next(iter(self.coefficients.values())))
        if features.shape[0] != expected:
            raise PlateError(
                f"the linear baseline was fitted on {expected} features, the field gives {features.shape[0]}"
            )
        return {
            name: np.tensordot(weights, features, axes=1) + self.intercepts[name]
            for name, weights in self.coefficients.items()
        }

    def predict(self, brightfield: np.ndarray) -> dict[str, np.ndarray]:
        """``{target: uint16 (H, W)}``: rounded and clipped linear predictions."""
        return {name: to_uint16(image) for name, image in self.predict_float(brightfield).items()}


def write_baseline_predictions(
    baseline: Baseline,
    fields: Sequence[object],
    out: str | os.PathLike[str],
) -> list[Path]:
    """Predict ``fields`` (:class:`vstain.plate.index.Field`) and write uint16 TIFFs into ``out``.

    Files are named as the CV7000 names the target channel (``Field.target_filename``), flat in
    ``out``, like ``vstain predict`` does for one magnification; writes are atomic.
    """
    from vstain.plate.tiff import write_tiff

    folder = Path(out)
    written = []
    for field in fields:
        brightfield = field.read_brightfield()  # type: ignore[attr-defined]
        if brightfield.shape[0] != N_PLANES:
            raise PlateError(f"{field.label}: expected {N_PLANES} brightfield planes")  # type: ignore[attr-defined]
        for name, image in baseline.predict(brightfield).items():
            written.append(write_tiff(folder / field.target_filename(name), image))  # type: ignore[attr-defined]
    return written
