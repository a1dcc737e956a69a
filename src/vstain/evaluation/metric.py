"""The challenge metric (``hackathon_evaluation_metrics.ipynb``), restated with explicit policies.

Definitions (evaluation spec §1.1), for one magnification:

* **pixelwise**, per channel C01/C02/C03: mean absolute error over every pixel of every field
  (raw counts) divided by the median of the target's pixels, all fields pooled; the pixelwise
  score is the mean of the three channels;
* **featurewise**: every feature column of both tables is divided by the target column's median
  over fields, the mean absolute error is taken per feature, and the mean over features is the
  score;
* **score** = (featurewise + pixelwise) / 2; the **total** over magnifications is the average
  weighted by the number of fields.

Where the official notebook silently misaligns or crashes, vstain decides, and reports every case:

* rows are matched by field identity ``(Metadata_Well, Metadata_FoV)``, never by position; a
  target field without prediction (*missing*) or a prediction without target field (*extra*) is
  left out of both metrics;
* a feature whose target median over fields is 0 or not finite is left out of the mean
  (``excluded_features``, with the reason);
* an entry whose target is not finite (NaN: no objects in that field) is skipped;
* an entry whose prediction is not finite while the target is finite counts as a prediction of 0:
  a failed segmentation is an error, not a free pass;
* a channel whose pooled target median is 0 is left out of the pixelwise mean, with the reason.

The pooled pixel median is exact and streamed: uint16 pixels are counted in a 65536-bin
histogram, so no more than one field is ever held in memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from vstain.atomic import write_text_atomic
from vstain.errors import PlateError
from vstain.evaluation.columns import METADATA_COLUMNS
from vstain.vocabulary import TARGET_CHANNEL_NAMES

#: Fluorescence channels the pixelwise metric averages (C01, C02, C03).
PIXEL_CHANNELS: tuple[str, ...] = TARGET_CHANNEL_NAMES
#: Columns that identify a field in a CellProfiler image table.
KEY_COLUMNS: tuple[str, str] = ("Metadata_Well", "Metadata_FoV")

POLICY: dict[str, str] = {
    "matching": "rows matched by (Metadata_Well, Metadata_FoV); missing or extra predictions are "
    "left out of both metrics and listed",
    "zero_or_nonfinite_median": "a feature whose target median over fields is 0 or not finite is "
    "excluded from the featurewise mean (excluded_features)",
    "nonfinite_target": "an entry whose target is NaN or infinite is skipped (skipped_target_entries)",
    "nonfinite_prediction": "an entry whose prediction is NaN or infinite while the target is finite "
    "counts as a prediction of 0 (prediction_counted_as_zero)",
    "zero_pixel_median": "a channel whose pooled target median is 0 is excluded from the pixelwise "
    "mean (excluded_channels)",
}


def field_label(well: str, fov: str | int) -> str:
    """Human-readable field id used in reports, e.g. ``D02 F007``."""
    fov_text = f"F{fov:03d}" if isinstance(fov, (int, np.integer)) else str(fov)
    return f"{well} {fov_text}"


def histogram_median(counts: np.ndarray) -> float:
    """Median of the values whose histogram is ``counts`` (``counts[v]`` = occurrences of ``v``).

    Equals ``np.median`` of the underlying integer values (mean of the two middle values for an
    even count). Returns NaN for an empty histogram.
    """
    cumulative = np.cumsum(np.asarray(counts, dtype=np.int64))
    n = int(cumulative[-1]) if cumulative.size else 0
    if n == 0:
        return math.nan

    def kth(k: int) -> int:  # the k-th smallest value, 0-based
        return int(np.searchsorted(cumulative, k, side="right"))

    if n % 2:
        return float(kth(n // 2))
    return (kth(n // 2 - 1) + kth(n // 2)) / 2.0


@dataclass(frozen=True)
class PixelwiseResult:
    """Pixelwise relative MAE per channel for one magnification."""

    per_channel: dict[str, float]
    target_median: dict[str, float]
    mae: dict[str, float]
    excluded_channels: dict[str, str]
    n_fields: int

    @property
    def value(self) -> float:
        """Mean of the channels' relative MAE (excluded channels left out); NaN if none is left."""
        kept = [v for c, v in self.per_channel.items() if c not in self.excluded_channels]
        return float(np.mean(kept)) if kept else math.nan


class PixelErrorAccumulator:
    """Streamed pixelwise metric: add one field at a time, read the result at the end.

    Per channel it keeps the running sum of absolute errors, the pixel count and a 65536-bin
    histogram of the target, so memory does not grow with the number of fields.
    """

    def __init__(self, channels: Sequence[str] = PIXEL_CHANNELS) -> None:
        self.channels = tuple(channels)
        self._abs_error = {c: 0.0 for c in self.channels}
        self._n_pixels = {c: 0 for c in self.channels}
        self._histogram = {c: np.zeros(65536, dtype=np.int64) for c in self.channels}
        self.n_fields = 0

    def add(self, truth: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray], *, label: str = "") -> None:
        """Add one field: ``{channel: (H, W) image}`` for target and prediction (uint16 counts).

        Raises
        ------
        ValueError
            If a channel is missing, shapes differ, or the target is not 8/16-bit unsigned.
        """
        where = f"{label}: " if label else ""
        for channel in self.channels:
            if channel not in truth or channel not in pred:
                raise ValueError(f"{where}channel {channel} missing from target or prediction")
            target, prediction = np.asarray(truth[channel]), np.asarray(pred[channel])
            if target.shape != prediction.shape:
                raise ValueError(
                    f"{where}{channel} target is {target.shape} but prediction is {prediction.shape}"
                )
            if target.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"{where}{channel} target is {target.dtype}; expected uint16 counts")
            # float32 as the notebook reads them; integer differences below 2**24 are exact.
            diff = np.abs(target.astype(np.float32) - prediction.astype(np.float32))
            self._abs_error[channel] += float(diff.sum(dtype=np.float64))
            self._n_pixels[channel] += target.size
            self._histogram[channel] += np.bincount(target.ravel(), minlength=65536)
        self.n_fields += 1

    def result(self) -> PixelwiseResult:
        """Relative MAE per channel over every field added so far."""
        per_channel: dict[str, float] = {}
        medians: dict[str, float] = {}
        maes: dict[str, float] = {}
        excluded: dict[str, str] = {}
        for channel in self.channels:
            n = self._n_pixels[channel]
            mae = self._abs_error[channel] / n if n else math.nan
            median = histogram_median(self._histogram[channel])
            maes[channel], medians[channel] = mae, median
            if n == 0:
                excluded[channel] = "no fields"
                per_channel[channel] = math.nan
            elif median == 0:
                excluded[channel] = "target median over pixels is 0"
                per_channel[channel] = math.nan
            else:
                per_channel[channel] = mae / median
        return PixelwiseResult(per_channel, medians, maes, excluded, self.n_fields)


def pixelwise_score(
    fields: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    *,
    channels: Sequence[str] = PIXEL_CHANNELS,
) -> PixelwiseResult:
    """Pixelwise metric of ``(target, prediction)`` field pairs (each ``{channel: image}``)."""
    accumulator = PixelErrorAccumulator(channels)
    for truth, pred in fields:
        accumulator.add(truth, pred)
    return accumulator.result()


#: :meth:`FeaturewiseResult.dominated_by`: a featurewise error is called dominated when its 3 largest
#: features carry at least half of it (of the 99 features a field is scored on).
DOMINANT_FEATURES = 3
DOMINANT_SHARE = 0.5


@dataclass(frozen=True)
class FeaturewiseResult:
    """Featurewise relative MAE per feature, and every policy case met on the way."""

    per_feature: dict[str, float]
    target_median: dict[str, float]
    excluded_features: dict[str, str]
    skipped_target_entries: dict[str, list[str]]
    prediction_counted_as_zero: dict[str, list[str]]
    matched_fields: list[str]
    missing_predictions: list[str]
    extra_predictions: list[str]

    @property
    def value(self) -> float:
        """Mean relative MAE over the scored features; NaN if none is left."""
        kept = [v for f, v in self.per_feature.items() if f not in self.excluded_features]
        return float(np.mean(kept)) if kept else math.nan

    @property
    def n_fields(self) -> int:
        return len(self.matched_fields)

    def largest(self, count: int | None = None) -> list[tuple[str, float]]:
        """The scored features with their relative MAE, largest first.

        Parameters
        ----------
        count
            How many to return; None: every scored feature.

        Returns
        -------
        list of (str, float)
            ``(feature, relative MAE)``, leaving out excluded features and non-finite errors.
        """
        scored = [(f, v) for f, v in self.per_feature.items() if f not in self.excluded_features and math.isfinite(v)]
        return sorted(scored, key=lambda item: -item[1])[:count]

    def dominated_by(self, count: int = DOMINANT_FEATURES, share: float = DOMINANT_SHARE) -> list[tuple[str, float]]:
        """The ``count`` largest features if they carry at least ``share`` of the summed featurewise error.

        A score driven by a handful of features usually says more about those features than about
        the images: a standard deviation over the two or three cells of a small 60x field, or an
        intensity whose target median is near 0, turns small absolute differences into relative
        errors of hundreds (docs/quality.md, "Lipids and cytoplasm at the recipe's own length on
        six fresh plates"). ``vstain evaluate`` names them so a user looks there first.

        Parameters
        ----------
        count
            How many of the largest features may carry the share.
        share
            The fraction of the summed relative MAE of all scored features they must carry.

        Returns
        -------
        list of (str, float)
            The ``count`` largest features with an error above 0, largest first; an empty list when the
            error is spread more evenly, when fewer than ``2 * count`` features are scored, or when it
            sums to 0.
        """
        scored = self.largest()
        total = sum(v for _, v in scored)
        top = scored[:count]
        if len(scored) < 2 * count or total <= 0 or sum(v for _, v in top) < share * total:
            return []
        return [(name, value) for name, value in top if value > 0]


def dominance_note(fw: FeaturewiseResult) -> str | None:
    """One sentence naming the features a featurewise error rests on, or None if it is spread out.

    Parameters
    ----------
    fw
        A featurewise result; see :meth:`FeaturewiseResult.dominated_by` for when it is dominated.

    Returns
    -------
    str or None
        E.g. ``"70% of the featurewise error comes from 3 of 99 features: StDev_cells_no_edge_Intensity_
        StdIntensity_Bodipy 1.92e+03 (target median 2.42e-06), ..."``, for ``vstain evaluate``'s summary
        and ``report.html``.
    """
    top = fw.dominated_by()
    if not top:
        return None
    scored = fw.largest()
    share = sum(v for _, v in top) / sum(v for _, v in scored)
    parts = ", ".join(f"{name} {value:.3g} (target median {fw.target_median.get(name, math.nan):.3g})"
                      for name, value in top)
    return (f"{share:.0%} of the featurewise error comes from {len(top)} of {len(scored)} features: {parts}; "
            "a feature measured over a few objects, or with a target median near 0, moves the score more "
            "than the images differ")


def _keyed(table: pd.DataFrame, role: str) -> pd.DataFrame:
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise PlateError(f"{role} feature table has no {', '.join(missing)} column; cannot match fields")
    keys = pd.MultiIndex.from_arrays(
        [table["Metadata_Well"].astype(str), table["Metadata_FoV"].astype(str)], names=KEY_COLUMNS
    )
    if keys.has_duplicates:
        dup = keys[keys.duplicated()][0]
        raise PlateError(f"{role} feature table lists field {field_label(*dup)} more than once")
    return table.set_axis(keys, axis=0)


def featurewise_score(
    truth: pd.DataFrame,
    pred: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
) -> FeaturewiseResult:
    """Featurewise relative MAE of two per-field tables (CellProfiler ``Adipocytes_Image.csv`` form).

    Parameters
    ----------
    truth, pred
        One row per field, with ``Metadata_Well`` and ``Metadata_FoV`` identifying it; the row
        order does not matter.
    features
        Columns to score; default: every column of ``truth`` but ``ImageNumber``,
        ``Metadata_Well`` and ``Metadata_FoV``.

    Returns
    -------
    FeaturewiseResult
        Per-feature relative MAE, with the policy cases listed (see module docstring).
    """
    truth_k, pred_k = _keyed(truth, "target"), _keyed(pred, "prediction")
    if features is None:
        features = [c for c in truth.columns if c not in METADATA_COLUMNS]
    absent = [f for f in features if f not in pred_k.columns or f not in truth_k.columns]
    if absent:
        raise PlateError(f"feature tables lack column {absent[0]} ({len(absent)} missing in all)")

    matched = truth_k.index.intersection(pred_k.index, sort=False)
    matched = truth_k.index[truth_k.index.isin(matched)]  # keep the target's order
    missing = [field_label(*k) for k in truth_k.index if k not in matched]
    extra = [field_label(*k) for k in pred_k.index if k not in truth_k.index]
    labels = [field_label(*k) for k in matched]

    target = truth_k.loc[matched, list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    prediction = pred_k.loc[matched, list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)

    per_feature: dict[str, float] = {}
    medians: dict[str, float] = {}
    excluded: dict[str, str] = {}
    skipped: dict[str, list[str]] = {}
    as_zero: dict[str, list[str]] = {}
    for j, name in enumerate(features):
        t, p = target[:, j], prediction[:, j]
        t_ok = np.isfinite(t)
        p_bad = t_ok & ~np.isfinite(p)
        if (~t_ok).any():
            skipped[name] = [labels[i] for i in np.flatnonzero(~t_ok)]
        if p_bad.any():
            as_zero[name] = [labels[i] for i in np.flatnonzero(p_bad)]
        # pandas' DataFrame.median (the notebook's) skips NaN; infinite targets are skipped too.
        median = float(np.median(t[t_ok])) if t_ok.any() else math.nan
        medians[name] = median
        if not t_ok.any():
            excluded[name] = "no finite target value in any field"
        elif median == 0:
            excluded[name] = "target median over fields is 0"
        if name in excluded:
            per_feature[name] = math.nan
            continue
        p_used = np.where(p_bad, 0.0, p)[t_ok]
        per_feature[name] = float(np.mean(np.abs(p_used / median - t[t_ok] / median)))
    return FeaturewiseResult(
        per_feature=per_feature,
        target_median=medians,
        excluded_features=excluded,
        skipped_target_entries=skipped,
        prediction_counted_as_zero=as_zero,
        matched_fields=labels,
        missing_predictions=missing,
        extra_predictions=extra,
    )


@dataclass(frozen=True)
class ChallengeScore:
    """The challenge score of one magnification: pixelwise, featurewise and their mean."""

    magnification: str
    pixelwise: PixelwiseResult
    featurewise: FeaturewiseResult
    warnings: tuple[str, ...] = dataclass_field(default_factory=tuple)

    @property
    def score(self) -> float:
        """(featurewise + pixelwise) / 2."""
        return (self.featurewise.value + self.pixelwise.value) / 2.0

    @property
    def n_fields(self) -> int:
        """Number of fields scored (target and prediction both present)."""
        return self.featurewise.n_fields

    def to_dict(self) -> dict:
        """JSON-ready dictionary (non-finite numbers become ``None``)."""
        fw, pw = self.featurewise, self.pixelwise
        return json_ready(
            {
                "pixelwise": pw.value,
                "featurewise": fw.value,
                "score": self.score,
                "n_fields": self.n_fields,
                "pixelwise_per_channel": pw.per_channel,
                "pixel_mae_per_channel": pw.mae,
                "pixel_target_median_per_channel": pw.target_median,
                "excluded_channels": pw.excluded_channels,
                "featurewise_per_feature": {
                    f: v for f, v in fw.per_feature.items() if f not in fw.excluded_features
                },
                "feature_target_median": fw.target_median,
                "excluded_features": fw.excluded_features,
                "skipped_target_entries": fw.skipped_target_entries,
                "prediction_counted_as_zero": fw.prediction_counted_as_zero,
                "missing_predictions": fw.missing_predictions,
                "extra_predictions": fw.extra_predictions,
                "warnings": list(self.warnings),
            }
        )


def total_score(scores: Sequence[ChallengeScore]) -> float:
    """Average of the magnifications' scores weighted by their field counts (NaN if none counts)."""
    usable = [s for s in scores if s.n_fields > 0 and math.isfinite(s.score)]
    weight = sum(s.n_fields for s in usable)
    if weight == 0:
        return math.nan
    return sum(s.score * s.n_fields for s in usable) / weight


def scores_to_dict(scores: Sequence[ChallengeScore]) -> dict:
    """``{"20x": {...}, ..., "total": ..., "policy": {...}}`` as written to ``scores.json``."""
    out: dict = {s.magnification: s.to_dict() for s in scores}
    out["total"] = json_ready(total_score(scores))
    out["policy"] = dict(POLICY)
    return out


def write_scores(path: str | os.PathLike[str], scores: Sequence[ChallengeScore]) -> Path:
    """Write ``scores.json`` atomically (strict JSON: NaN and inf are written as ``null``)."""
    text = json.dumps(scores_to_dict(scores), indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def json_ready(value):
    """``value`` with NaN / inf as None and numpy scalars as Python numbers, for strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
