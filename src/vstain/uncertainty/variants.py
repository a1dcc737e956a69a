"""Measure a field's TTA variants: the prediction, its per-pixel spread, and each feature's spread.

The eight test-time-augmentation variants of a field (src/vstain/inference/engine.py) are eight
plausible stainings. Measured with the evaluation pipeline, their spread says how stable each
feature is under the augmentation: the σ that normalises the conformal scores
(src/vstain/uncertainty/conformal.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.vocabulary import CELLPROFILER_NAMES, TARGETS

#: Image names the pipeline measures, to the stain they come from.
_IMAGE_STAINS = {**{name: target for target, name in CELLPROFILER_NAMES.items()},
                 "Defect_image_rescaled": "lipids"}
#: Object names of the pipeline, to the stain that segments them.
_OBJECT_STAINS = {"nuclei": "nuclei", "Lipids": "lipids", "Defective": "lipids", "cells": "cytoplasm"}


def feature_stain(name: str) -> str:
    """The stain a per-field feature mostly reports on (for per-stain coverage summaries).

    Intensity and granularity features belong to the image they measure (``…_Bodipy`` → lipids);
    counts and shapes to the stain whose objects they describe (``Count_nuclei`` → nuclei,
    ``Mean_cells_no_edge_AreaShape_Area`` → cytoplasm).
    """
    for image, target in _IMAGE_STAINS.items():
        if name.endswith("_" + image):
            return target
    for objects, target in _OBJECT_STAINS.items():
        if f"_{objects}" in name:
            return target
    raise ValueError(f"feature {name!r} names no known image or objects")


def to_counts(image: np.ndarray) -> np.ndarray:
    """Float stain counts as the uint16 image a prediction would be written as (rounded, clipped)."""
    return np.clip(np.rint(image), 0, np.iinfo(np.uint16).max).astype(np.uint16)


@dataclass
class VariantMeasurement:
    """One field's prediction with its spreads.

    Attributes
    ----------
    images
        ``{target: uint16 (H, W)}`` the TTA mean, as ``vstain predict --tta 8`` writes it.
    spreads
        ``{target: float64 (H, W)}`` per-pixel population standard deviation over the variants.
    features
        The 99 features measured on ``images`` (NaN where the pipeline gives none).
    sigmas
        Each feature's population standard deviation over the variants' measurements (finite
        variants only; NaN when fewer than two are finite).
    warnings
        The measurement's warnings on ``images``.
    """

    images: dict[str, np.ndarray]
    spreads: dict[str, np.ndarray]
    features: dict[str, float]
    sigmas: dict[str, float]
    warnings: list[str]


def measure_variants(
    variants: Mapping[str, np.ndarray],
    *,
    magnification: str,
    measure: Callable[..., Any] | None = None,
    threads: int | None = None,
) -> VariantMeasurement:
    """Measure the TTA mean and every variant of one field.

    Parameters
    ----------
    variants
        ``{target: (T, H, W)}`` for all three stains, in stain counts (float), as
        :meth:`vstain.inference.predictor.Predictor.predict_variants` returns them.
    magnification
        Picks the pipeline's settings.
    measure
        ``measure(nuclei, lipids, cytoplasm, *, magnification, threads) -> result with .features``;
        default :func:`vstain.evaluation.pipeline.measure_field`.
    threads
        Threads per measurement (default: the pipeline's).
    """
    missing = [t for t in TARGETS if t not in variants]
    if missing:
        raise ValueError(f"the features need all three stains; no prediction of {', '.join(missing)}")
    if measure is None:
        from vstain.evaluation.pipeline import measure_field as measure
    stacks = {t: np.asarray(variants[t], dtype=np.float64) for t in TARGETS}
    count = {s.shape[0] for s in stacks.values()}
    if len(count) != 1 or next(iter(count)) < 2:
        raise ValueError("every stain needs the same number (>= 2) of TTA variants")
    images = {t: to_counts(stacks[t].mean(axis=0)) for t in TARGETS}
    spreads = {t: stacks[t].std(axis=0) for t in TARGETS}

    def features_of(pixels: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
        result = measure(*(pixels[t] for t in TARGETS), magnification=magnification, threads=threads)
        values = dict(result.features)
        return np.array([float(values[c]) for c in FEATURE_COLUMNS]), list(getattr(result, "warnings", []))

    on_mean, warnings = features_of(images)
    per_variant = np.stack([features_of({t: to_counts(stacks[t][k]) for t in TARGETS})[0]
                            for k in range(next(iter(count)))])
    finite = np.isfinite(per_variant)
    sigmas = np.full(len(FEATURE_COLUMNS), np.nan)
    enough = finite.sum(axis=0) >= 2
    for j in np.flatnonzero(enough):
        sigmas[j] = float(np.std(per_variant[finite[:, j], j]))
    return VariantMeasurement(
        images=images,
        spreads=spreads,
        features=dict(zip(FEATURE_COLUMNS, on_mean.tolist())),
        sigmas=dict(zip(FEATURE_COLUMNS, sigmas.tolist())),
        warnings=warnings,
    )
