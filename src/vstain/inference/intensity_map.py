"""A monotone map of a model's output intensities onto the intensity histogram of its targets.

A network trained on a pixel loss predicts, where it is unsure, something close to the mean of
what could be there: a nucleus it can barely see in brightfield comes out as a dim, blurred
blob. The challenge's pipelines then threshold the image at absolute levels (a 20x nucleus must
reach 0.02 of the 16-bit range, 1311 counts), so dim blobs are not found and the nuclei count
falls (docs/quality.md, "Intensity map"). Rescaling per plate by hand would be tuning.

This map is learned, like the network, from the run's own data: on the validation fields, the
``k``-th quantile of the exported model's predictions is mapped onto the ``k``-th quantile of the
real stain (quantile or histogram matching), with linear interpolation in between and the end
points held beyond the range. It is monotone, so it never reorders pixels: bright stays brighter
than dim, and the objects the network draws keep their shapes; only their levels move to where
the real stain puts them. It is stored in the bundle (:class:`IntensityMap` as JSON) and applied
by :class:`~vstain.inference.predictor.Predictor`; ``validation.intensity_map`` turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from vstain.errors import BundleError

#: Quantile levels of the map: 0, 0.1 %, ..., 100 %. Nuclei cover a few percent of a field, so
#: the map needs fine steps at the top to follow them.
LEVELS = 1001


@dataclass(frozen=True)
class IntensityMap:
    """Piecewise-linear, non-decreasing map from predicted to real stain intensities (counts).

    Attributes
    ----------
    predicted
        Quantiles of the predictions (strictly increasing; ties are broken by tiny steps).
    target
        The same quantiles of the real stain (non-decreasing).
    fields
        How many validation fields it was fitted on.
    """

    predicted: tuple[float, ...]
    target: tuple[float, ...]
    fields: int = 0

    @classmethod
    def fit(cls, predictions: Iterable[np.ndarray], targets: Iterable[np.ndarray], *,
            levels: int = LEVELS) -> "IntensityMap":
        """Match the quantiles of ``predictions`` to those of ``targets`` (any shapes, counts).

        Parameters
        ----------
        predictions, targets
            Images of the same fields, in the same order (each pair the same number of pixels).
        levels
            Number of quantile levels from 0 to 1.
        """
        predicted = [np.asarray(p, dtype=np.float64).ravel() for p in predictions]
        real = [np.asarray(t, dtype=np.float64).ravel() for t in targets]
        if not predicted or len(predicted) != len(real):
            raise ValueError(f"need the same, non-zero number of predicted and real images "
                             f"({len(predicted)} vs {len(real)})")
        quantiles = np.linspace(0.0, 1.0, levels)
        x = np.quantile(np.concatenate(predicted), quantiles)
        y = np.quantile(np.concatenate(real), quantiles)
        # Flat stretches of the predictions (e.g. a constant background) would make the map
        # multi-valued there; a step of a millionth of a count keeps it a function and changes
        # no output by more than that.
        x = x + np.arange(levels) * 1e-6
        x = np.maximum.accumulate(x)
        return cls(tuple(float(v) for v in x), tuple(float(v) for v in y), fields=len(predicted))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The mapped intensities, float64, same shape as ``values``."""
        return np.interp(np.asarray(values, dtype=np.float64), self.predicted, self.target)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in a bundle's metadata."""
        return {"predicted": list(self.predicted), "target": list(self.target), "fields": self.fields}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "intensity_map") -> "IntensityMap":
        """Validate a stored map; one :class:`~vstain.errors.BundleError` line naming ``source`` if it is broken."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{source}: expected a mapping with 'predicted' and 'target' lists")
        try:
            x = np.asarray(data["predicted"], dtype=np.float64)
            y = np.asarray(data["target"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{source}: 'predicted' and 'target' must be lists of numbers") from None
        if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
            raise BundleError(f"{source}: 'predicted' and 'target' must be lists of the same length (at least 2), "
                              f"got {x.shape} and {y.shape}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise BundleError(f"{source}: holds a value that is not a finite number")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
            raise BundleError(f"{source}: 'predicted' must increase and 'target' must not decrease")
        fields = data.get("fields", 0)
        if not isinstance(fields, int) or fields < 0:
            raise BundleError(f"{source}: 'fields' must be a non-negative integer")
        return cls(tuple(float(v) for v in x), tuple(float(v) for v in y), fields=fields)
