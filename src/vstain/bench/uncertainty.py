"""``vstain bench uncertainty``: do the calibrated intervals cover at their level on new fields?

One synthetic plate (``vstain synth``, small fields), split into train / validation /
calibration / test fields; the three stains are trained with the CPU recipe at the quality
benchmark's budget (src/vstain/bench/quality.py), calibrated on the calibration fields at each
level α (``vstain calibrate``), and the test fields are predicted with intervals (``vstain predict
--calibration``). On the test fields it measures:

* coverage: of the nuclei-count intervals, of every per-field feature (mean over features), of
  the pixel intervals (per stain), against 1 − α and the spread expected for that many fields
  (:func:`vstain.uncertainty.conformal.expected_coverage_spread`);
* adaptivity: the rank correlation of interval width with the actual error over test fields, the
  width on the better- vs the worse-predicted half of the fields, and the width and coverage of a
  constant-width conformal interval calibrated on the same fields (the same conformal rule on
  unnormalised errors);
* time: calibration and prediction with intervals, wall seconds.

Writes ``uncertainty.json`` and ``uncertainty.md`` into ``out``; the plate, runs, calibrations and
predictions stay there, and a rerun reuses them (delete a part to recompute it).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from vstain.atomic import write_text_atomic
from vstain.evaluation.metric import json_ready
from vstain.vocabulary import CALIBRATION, TARGETS, TEST

__all__ = ["run_uncertainty_benchmark", "uncertainty_markdown"]

#: Fields of each subset; the rest of the 10 x 10 plate trains.
SUBSETS = {TEST: 42, CALIBRATION: 42, "validation": 4}
EPOCHS = {"nuclei": 4, "lipids": 3, "cytoplasm": 3}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    ra, rb = pd.Series(a[ok]).rank().to_numpy(), pd.Series(b[ok]).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def _train(out: Path, *, magnification: str, seed: int, smoke: bool, size: tuple[int, int],
           log: Callable[[str], None]) -> dict[str, Path]:
    from vstain.bench.quality import _COMMON
    from vstain.plate.index import index_plate
    from vstain.plate.splits import random_split
    from vstain.synth.plate import generate_plate
    from vstain.training.recipes import cpu_recipe, final_runs, train_recipe

    recipe = cpu_recipe(magnification)
    bundles = {stain: out / "runs" / run / "model.safetensors" for stain, run in final_runs(recipe).items()}
    if all(p.is_file() for p in bundles.values()):
        log(f"models: already trained ({out / 'runs'})")
        return bundles
    if not (out / "split.csv").is_file():
        wells, fields, size = (4, 6, (128, 128)) if smoke else (10, 10, size)
        generate_plate(out / "plate", magnification=magnification, wells=wells, fields=fields, seed=seed, size=size,
                       preset="reference", overwrite=True)
        keys = [f.key for f in index_plate(out / "plate", magnification=magnification).fields]
        sizes = {TEST: 9, CALIBRATION: 9, "validation": 2} if smoke else SUBSETS
        random_split(keys, sizes, seed=seed).save(out / "split.csv")
    steps = {s: (f"trainer.max_epochs={1 if smoke else e}",) + (("data.samples_per_epoch=8", "data.crop_size=96")
                                                               if smoke else ()) for s, e in EPOCHS.items()}
    log("training the CPU recipe (quality-benchmark budget)")
    return train_recipe(recipe, plate=out / "plate", split=out / "split.csv", runs_dir=out / "runs",
                        magnification=magnification, seed=seed, overrides=_COMMON, step_overrides=steps)


def _truth_features(fields: Sequence[Any], cache: Path) -> pd.DataFrame:
    from vstain.evaluation.columns import FEATURE_COLUMNS
    from vstain.evaluation.pipeline import measure_field

    if cache.is_file():
        return pd.read_csv(cache, dtype={"Metadata_Well": str, "Metadata_FoV": str})
    rows = []
    for field in fields:
        result = measure_field(*(field.read_target(t) for t in TARGETS), magnification=field.magnification)
        rows.append({"Metadata_Well": field.well, "Metadata_FoV": f"F{field.field:03d}",
                     **{c: float(result.features[c]) for c in FEATURE_COLUMNS}})
    frame = pd.DataFrame(rows)
    frame.to_csv(cache, index=False)
    return frame


def _constant_width(parts: Sequence[Any], alpha: float) -> dict[str, float]:
    """Per feature, the half width of the constant conformal interval (unnormalised |error| scores)."""
    from vstain.evaluation.columns import FEATURE_COLUMNS
    from vstain.uncertainty.conformal import NotEnoughCalibration, conformal_quantile

    p = np.stack([np.where(np.isfinite(part.predicted), part.predicted, 0.0) for part in parts])
    t = np.stack([part.truth for part in parts])
    out = {}
    for j, name in enumerate(FEATURE_COLUMNS):
        ok = np.isfinite(t[:, j])
        try:
            out[name] = conformal_quantile(np.abs(p[ok, j] - t[ok, j]), alpha)
        except NotEnoughCalibration:
            out[name] = math.nan
    return out


def _pixel_constant(parts: Sequence[Any], alpha: float) -> dict[str, float]:
    """Per stain, the half width c of a constant pixel interval prediction ± c by the same risk control."""
    from vstain.uncertainty.conformal import risk_control_lambda

    return {t: risk_control_lambda([np.sort(part.abs_error[t].astype(np.float64)) for part in parts], alpha)
            for t in TARGETS}


def _level(out: Path, alpha: float, bundles: dict[str, Path], plate: Path, split: Path, magnification: str,
           truth: pd.DataFrame, test_fields: Sequence[Any], log: Callable[[str], None]) -> dict[str, Any]:
    from vstain.evaluation.coverage import COUNT_FEATURE, feature_coverage, pixel_coverage, read_intervals
    from vstain.plate.tiff import read_tiff
    from vstain.uncertainty.calibrate import calibrate, read_parts
    from vstain.uncertainty.conformal import expected_coverage_spread
    from vstain.uncertainty.intervals import predict_intervals

    tag = f"a{alpha:g}"
    t0 = time.perf_counter()
    made = out / f"calibration_{tag}.json"
    reused = made.is_file()
    if reused:  # reused (its predictions too); delete it to calibrate again
        from vstain.uncertainty.calibration import Calibration

        cal = Calibration.load(made)
    else:
        cal = calibrate([str(b) for b in bundles.values()], plate, made, alpha=alpha, split=split,
                        magnification=magnification, progress=False, parts=out / "calibration.parts")
    calibrate_s = time.perf_counter() - t0
    pred = out / f"pred_{tag}"
    # Predictions of an earlier calibration (a finished or a killed run) are redone, not refused.
    digest = hashlib.sha256((out / f"calibration_{tag}.json").read_bytes()).hexdigest()
    if any(json.loads(part.read_text()).get("calibration_sha256") != digest
           for part in sorted((pred / "intervals").glob("*.json"))):
        shutil.rmtree(pred)
    t0 = time.perf_counter()
    manifest = predict_intervals([str(b) for b in bundles.values()], plate, pred, made, alpha=alpha,
                                 keys=[f.key for f in test_fields], progress=False)
    predict_s = time.perf_counter() - t0
    log(f"alpha {alpha}: calibrated {len(cal.fields)} fields in {calibrate_s:.0f} s, predicted "
        f"{len(test_fields)} with intervals in {predict_s:.0f} s")

    intervals = read_intervals(pred / "intervals.csv")
    coverage = feature_coverage(intervals, truth, magnification=magnification, alpha=alpha)
    pixel_coverage(coverage, [({t: f.read_target(t) for t in TARGETS}, pred,
                               [f.target_filename(t) for t in TARGETS]) for f in test_fields])

    joined = intervals.merge(truth.melt(id_vars=["Metadata_Well", "Metadata_FoV"], var_name="feature",
                                        value_name="truth").rename(columns={"Metadata_Well": "well",
                                                                            "Metadata_FoV": "field"}),
                             on=["well", "field", "feature"])
    joined = joined[np.isfinite(joined["lower"]) & np.isfinite(joined["truth"].astype(float))]
    joined = joined.assign(truth=joined["truth"].astype(float), width=joined["upper"] - joined["lower"])
    joined = joined.assign(error=(joined["prediction"] - joined["truth"]).abs())
    parts = read_parts(out / "calibration.parts", cal.fields)  # read once for both constant intervals
    constant = _constant_width(parts, alpha)
    per_feature = []
    for name, group in joined.groupby("feature"):
        half = constant.get(name, math.nan)
        order = np.argsort(group["error"].to_numpy(), kind="stable")
        widths = group["width"].to_numpy()[order]
        better, worse = widths[: len(widths) // 2], widths[len(widths) // 2:]
        per_feature.append({
            "feature": name, "spearman_width_error": _spearman(group["width"].to_numpy(), group["error"].to_numpy()),
            "width_ratio_better_worse": float(np.mean(better) / np.mean(worse)) if np.mean(worse) > 0 else math.nan,
            "adaptive_mean_width": float(group["width"].mean()), "constant_width": 2 * half,
            "constant_coverage": float((group["error"] <= half).mean()) if math.isfinite(half) else math.nan,
        })
    adapt = pd.DataFrame(per_feature).set_index("feature")
    relative = (adapt["adaptive_mean_width"] / adapt["constant_width"]).replace([np.inf, -np.inf], np.nan)

    pixel_const = _pixel_constant(parts, alpha)
    pixels: dict[str, dict[str, float]] = {}
    for t in TARGETS:
        inside_const, adaptive_width, spearman_inputs = [], [], ([], [])
        for f in test_fields:
            name = f.target_filename(t)
            real = f.read_target(t).astype(np.float64)
            centre = read_tiff(pred / name).astype(np.float64)
            width = read_tiff(pred / "upper" / name).astype(np.float64) - read_tiff(pred / "lower" / name)
            error = np.abs(real - centre)
            inside_const.append(float(np.mean(error <= pixel_const[t])))
            adaptive_width.append(float(width.mean()))
            spearman_inputs[0].append(float(width.mean()))
            spearman_inputs[1].append(float(error.mean()))
        pixels[t] = {"coverage": coverage.stains[t].get("pixel_coverage", math.nan),
                     "mean_width": float(np.mean(adaptive_width)), "constant_width": 2 * pixel_const[t],
                     "constant_coverage": float(np.mean(inside_const)),
                     "spearman_field_width_error": _spearman(np.array(spearman_inputs[0]),
                                                             np.array(spearman_inputs[1])),
                     "multiplier": cal.pixels[t].multiplier}
    count = coverage.features.get(COUNT_FEATURE, {})
    expected_mean, expected_sd = expected_coverage_spread(len(cal.fields), len(test_fields), alpha)
    return {
        "alpha": alpha,
        "calibration_fields": len(cal.fields),
        "test_fields": len(test_fields),
        "expected_coverage": expected_mean,
        "expected_coverage_sd": expected_sd,
        "nuclei_count": {"coverage": count.get("coverage"), "mean_width": count.get("mean_width"),
                         **({k: adapt.loc[COUNT_FEATURE, k] for k in adapt.columns} if COUNT_FEATURE in adapt.index
                            else {})},
        "features": {"mean_coverage": coverage.overall["feature_coverage"],
                     "min_coverage": min(f["coverage"] for f in coverage.features.values()),
                     "features_with_intervals": len(coverage.features),
                     "median_spearman_width_error": float(adapt["spearman_width_error"].median()),
                     "median_width_ratio_better_worse": float(adapt["width_ratio_better_worse"].median()),
                     "median_width_vs_constant": float(relative.median()),
                     "mean_constant_coverage": float(adapt["constant_coverage"].mean())},
        "per_stain_feature_coverage": {t: coverage.stains[t]["feature_coverage"] for t in TARGETS},
        "pixels": pixels,
        # None where this run reused earlier results (the time of the run that made them is in its log)
        "seconds": {"calibrate": None if reused else round(calibrate_s, 1),
                    "predict_with_intervals": round(predict_s, 1) if manifest["fields"]["predicted"] else None},
    }


def run_uncertainty_benchmark(out: str | Path, *, alphas: Sequence[float] = (0.1, 0.2), magnification: str = "20x",
                              seed: int = 0, smoke: bool = False, size: tuple[int, int] = (256, 256),
                              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, calibrate, predict with intervals and measure coverage (module docstring); returns the summary.

    ``size`` is the fields' size (default 256²; larger fields hold more nuclei, so counts are
    less discrete, at about (size/256)² the time).
    """
    from vstain.plate.index import index_plate
    from vstain.plate.splits import Split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundles = _train(out, magnification=magnification, seed=seed, smoke=smoke, size=size, log=log)
    split = Split.load(out / "split.csv")
    index = index_plate(out / "plate", magnification=magnification)
    test_fields = index.select(magnification=magnification, keys=split.keys(TEST, magnification=magnification))
    truth = _truth_features(test_fields, out / "truth_test_features.csv")
    levels = [_level(out, a, bundles, out / "plate", out / "split.csv", magnification, truth, test_fields, log)
              for a in alphas]
    summary = {"magnification": magnification, "seed": seed, "smoke": smoke, "levels": levels,
               "plate": "vstain synth reference preset, " + ("4 wells x 6 fields of 128x128" if smoke else
                                                             f"10 wells x 10 fields of {size[0]}x{size[1]}")}
    write_text_atomic(out / "uncertainty.json", json.dumps(json_ready(summary), indent=1, allow_nan=False) + "\n")
    write_text_atomic(out / "uncertainty.md", uncertainty_markdown(summary))
    return summary


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def uncertainty_markdown(summary: dict[str, Any]) -> str:
    """The benchmark's tables (docs/uncertainty.md quotes them)."""
    lines = ["| alpha | target | expected (± sd) | nuclei count | features (mean) | features (min) | "
             "pixels nuclei | pixels lipids | pixels cytoplasm |", "| --- " * 9 + "|"]
    for level in summary["levels"]:
        p = level["pixels"]
        lines.append(f"| {level['alpha']} | {1 - level['alpha']:.2f} | {_num(level['expected_coverage'])} ± "
                     f"{_num(level['expected_coverage_sd'])} | {_num(level['nuclei_count']['coverage'])} | "
                     f"{_num(level['features']['mean_coverage'])} | {_num(level['features']['min_coverage'])} | "
                     f"{_num(p['nuclei']['coverage'])} | {_num(p['lipids']['coverage'])} | "
                     f"{_num(p['cytoplasm']['coverage'])} |")
    lines += ["", "| alpha | nuclei count: width (adaptive / constant) | Spearman(width, error) | "
              "features: median width / constant | median Spearman | width better / worse half | "
              "constant coverage (features) | seconds: calibrate, predict |", "| --- " * 8 + "|"]
    for level in summary["levels"]:
        count, features = level["nuclei_count"], level["features"]
        lines.append(f"| {level['alpha']} | {_num(count.get('adaptive_mean_width'), 1)} / "
                     f"{_num(count.get('constant_width'), 1)} | {_num(count.get('spearman_width_error'), 2)} | "
                     f"{_num(features['median_width_vs_constant'], 2)} | "
                     f"{_num(features['median_spearman_width_error'], 2)} | "
                     f"{_num(features['median_width_ratio_better_worse'], 2)} | "
                     f"{_num(features['mean_constant_coverage'])} | {_seconds(level['seconds']['calibrate'])}, "
                     f"{_seconds(level['seconds']['predict_with_intervals'])} |")
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "reused" if value is None else f"{value:.0f}"
