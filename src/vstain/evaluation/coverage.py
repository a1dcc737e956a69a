"""Empirical coverage of prediction intervals on fields with real stains (docs/uncertainty.md).

``vstain predict --calibration`` writes ``intervals.csv`` (every field x feature: prediction, lower,
upper) and ``lower/`` / ``upper/`` pixel maps (src/vstain/uncertainty/intervals.py). On fields whose
real stains are known, :func:`feature_coverage` says how often the feature intervals held the value
measured on the real stains, and how wide they were; :func:`pixel_coverage` says which fraction of
each field's pixels lay inside its pixel interval (the risk the calibration bounds is one minus
that, averaged over fields).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from vstain.atomic import write_text_atomic
from vstain.errors import PlateError
from vstain.evaluation.metric import json_ready
from vstain.vocabulary import TARGETS

INTERVALS_CSV = "intervals.csv"
LOWER_DIR = "lower"
UPPER_DIR = "upper"
#: Columns of intervals.csv, one row per field and feature.
INTERVAL_COLUMNS = ("magnification", "well", "field", "feature", "stain", "prediction", "lower", "upper")
#: The feature users ask about first; reports and the benchmark single it out.
COUNT_FEATURE = "Count_nuclei"


@dataclass
class CoverageResult:
    """Coverage and widths of one magnification's intervals.

    ``features``: per feature ``{"coverage", "mean_width", "fields", "stain"}`` over the fields where
    both the interval and the real-stain value are finite; ``stains``: per stain the mean coverage of
    its features and the mean pixel coverage; ``overall``: the mean feature coverage and, if pixel
    maps were given, the mean pixel coverage over stains.
    """

    magnification: str
    alpha: float | None
    features: dict[str, dict[str, Any]]
    stains: dict[str, dict[str, float]]
    overall: dict[str, float]
    pixels: dict[str, list[float]] = dataclass_field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as None)."""
        return json_ready(asdict(self))


def read_intervals(path: str | Path) -> pd.DataFrame:
    """Read ``intervals.csv``, refusing (one line) a file without the expected columns."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"well": str, "field": str})
    except (OSError, ValueError) as exc:
        raise PlateError(f"{path}: not a readable intervals.csv ({exc})") from None
    missing = [c for c in INTERVAL_COLUMNS if c not in table.columns]
    if missing:
        raise PlateError(f"{path}: no column {missing[0]!r}; write it with vstain predict --calibration")
    return table


def feature_coverage(intervals: pd.DataFrame, truth: pd.DataFrame, *, magnification: str,
                     alpha: float | None = None) -> CoverageResult:
    """How often each feature's interval held the value measured on the real stains.

    Parameters
    ----------
    intervals
        :func:`read_intervals` of the prediction folder.
    truth
        The real stains' feature table (``FeatureTable.frame``: ``Metadata_Well``, ``Metadata_FoV``
        and the features).
    magnification
        Rows of ``intervals`` at other magnifications are ignored.
    alpha
        The calibration's level, for the report.
    """
    rows = intervals[intervals["magnification"] == magnification]
    truth_long = truth.melt(id_vars=["Metadata_Well", "Metadata_FoV"], var_name="feature", value_name="truth")
    truth_long = truth_long.rename(columns={"Metadata_Well": "well", "Metadata_FoV": "field"})
    joined = rows.merge(truth_long, on=["well", "field", "feature"], how="inner")
    usable = joined[np.isfinite(joined["lower"]) & np.isfinite(joined["upper"])
                    & np.isfinite(pd.to_numeric(joined["truth"], errors="coerce"))].copy()
    usable["truth"] = usable["truth"].astype(float)
    usable["inside"] = (usable["truth"] >= usable["lower"]) & (usable["truth"] <= usable["upper"])
    usable["width"] = usable["upper"] - usable["lower"]
    features: dict[str, dict[str, Any]] = {}
    for name, group in usable.groupby("feature", sort=True):
        features[str(name)] = {"coverage": float(group["inside"].mean()), "mean_width": float(group["width"].mean()),
                               "fields": int(len(group)), "stain": str(group["stain"].iloc[0])}
    stains = {}
    for stain in TARGETS:
        values = [f["coverage"] for f in features.values() if f["stain"] == stain]
        stains[stain] = {"feature_coverage": float(np.mean(values)) if values else math.nan}
    overall = {"feature_coverage": float(np.mean([f["coverage"] for f in features.values()])) if features else math.nan,
               "fields": int(usable[["well", "field"]].drop_duplicates().shape[0])}
    return CoverageResult(magnification=magnification, alpha=alpha, features=features, stains=stains,
                          overall=overall)


def pixel_coverage(result: CoverageResult, fields: Sequence[tuple[Mapping[str, np.ndarray], Path, Sequence[str]]]
                   ) -> CoverageResult:
    """Add the pixel coverage: per field and stain, the fraction of real pixels inside [lower, upper].

    Parameters
    ----------
    result
        From :func:`feature_coverage`; updated in place and returned.
    fields
        Per field: the real stains ``{target: (H, W)}``, the prediction folder, and the file name of
        each stain (in :data:`~vstain.vocabulary.TARGETS` order) under ``lower/`` and ``upper/``.
    """
    from vstain.plate.tiff import read_tiff

    per_stain: dict[str, list[float]] = {t: [] for t in TARGETS}
    for truth, folder, names in fields:
        for target, name in zip(TARGETS, names):
            lower_path, upper_path = folder / LOWER_DIR / name, folder / UPPER_DIR / name
            if not (lower_path.is_file() and upper_path.is_file()):
                continue
            lower, upper, real = read_tiff(lower_path), read_tiff(upper_path), truth[target]
            if lower.shape != real.shape or upper.shape != real.shape:
                raise PlateError(f"{lower_path}: size {lower.shape} differs from the real stain's {real.shape}")
            per_stain[target].append(float(np.mean((real >= lower) & (real <= upper))))
    result.pixels = {t: v for t, v in per_stain.items() if v}
    for target, values in result.pixels.items():
        result.stains[target]["pixel_coverage"] = float(np.mean(values))
    if result.pixels:
        result.overall["pixel_coverage"] = float(np.mean([np.mean(v) for v in result.pixels.values()]))
    return result


def write_coverage(path: str | Path, results: Sequence[CoverageResult]) -> Path:
    """``coverage.json``: one entry per magnification (strict JSON)."""
    data = {r.magnification: r.to_dict() for r in results}
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")

