"""``vstain calibrate``: conformal calibration of model bundles on fields with real stains.

For every calibration field the bundles predict the eight TTA variants
(:meth:`vstain.inference.predictor.Predictor.predict_variants`); the TTA mean, each variant and the
real stains are measured with the evaluation pipeline (src/vstain/uncertainty/variants.py). Per
feature that gives a prediction, a truth and a TTA spread σ per field; per stain, a prediction, a
truth and a spread per pixel. :func:`calibration_from_parts` turns them into the conformal quantiles
and risk-control multipliers of src/vstain/uncertainty/conformal.py.

Each field's numbers are saved as it ends (``<out>.parts/``, one ``.npz`` per field, keyed by the
bundles' hashes), so an interrupted calibration resumes, and a calibration at another ``alpha``
reuses them without predicting again.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vstain import __version__
from vstain.atomic import atomic_path
from vstain.errors import VstainError
from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.uncertainty.calibration import Calibration, CalibrationError, FeatureCalibration, PixelCalibration
from vstain.uncertainty.conformal import (
    check_alpha,
    check_enough,
    conformal_quantile,
    feature_floor,
    field_loss,
    minimum_fields,
    needed_multipliers,
    normalised_scores,
    risk_control_lambda,
)
from vstain.vocabulary import CALIBRATION, TARGETS, TRAIN, VALIDATION

#: Pixels kept per field and stain for the risk control; fields up to 512² are used whole.
MAX_PIXELS_PER_FIELD = 512 * 512


@dataclass
class FieldPart:
    """One calibration field: features on prediction and truth, their TTA σ, pixel samples."""

    identity: str
    predicted: np.ndarray  # (99,) on the TTA mean
    sigma: np.ndarray  # (99,) over the variants
    truth: np.ndarray  # (99,) on the real stains
    abs_error: dict[str, np.ndarray]  # per stain, float32 |truth − prediction| of the kept pixels
    spread: dict[str, np.ndarray]  # per stain, float32 TTA spread of the same pixels


def sample_pixels(n_pixels: int, *, seed: int, limit: int = MAX_PIXELS_PER_FIELD) -> np.ndarray | None:
    """Indices of the pixels kept for the risk control: None (all) up to ``limit``, else a seeded sample."""
    if n_pixels <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_pixels, size=limit, replace=False))


def select_calibration_fields(index: Any, *, magnification: str, split: str | os.PathLike[str] | None,
                              subset: str = CALIBRATION) -> list[Any]:
    """The plate's fields to calibrate on: the split's ``subset`` fields, or every field with all stains."""
    from vstain.plate.splits import Split

    fields = index.select(magnification=magnification)
    if split is not None:
        chosen = Split.load(split)
        chosen.check_fields([f.key for f in index.fields], source=split)
        keys = chosen.keys(subset, magnification=magnification)
        if not keys:
            raise CalibrationError(f"{split}: no {subset} field at {magnification}; mark fields never used in "
                                   f"training as {subset} (docs/splits.md)")
        fields = [f for f in fields if f.key in keys]
    lacking = [f for f in fields if not f.has_targets(TARGETS)]
    if lacking:
        absent = ", ".join(t for t in TARGETS if t not in lacking[0].targets)
        more = f" (and {len(lacking) - 1} more fields)" if len(lacking) > 1 else ""
        raise CalibrationError(f"calibration needs the real stains: {lacking[0].label} has no {absent}{more}")
    return fields


def check_not_trained_on(fields: Sequence[Any], bundles: Sequence[Any]) -> None:
    """Refuse calibration fields that a bundle was trained or validated on (they would under-cover)."""
    from vstain.plate.index import field_identity

    mine = {field_identity(f): f for f in fields}
    for bundle in bundles:
        seen = bundle.metadata.training.get("fields") or {}
        for subset in (TRAIN, VALIDATION):
            overlap = sorted(set(seen.get(subset, [])) & set(mine))
            if overlap:
                more = f" and {len(overlap) - 1} more" if len(overlap) > 1 else ""
                raise CalibrationError(
                    f"{mine[overlap[0]].label}{more}: in the {subset} split of {bundle.path or bundle.name}; "
                    f"calibrate on fields the models never saw (a {CALIBRATION} subset, docs/splits.md)")


def _part_path(folder: Path, field: Any) -> Path:
    return folder / f"{field.magnification}_{field.well}_F{field.field:03d}.npz"


def _save_part(path: Path, part: FieldPart, key: str) -> None:
    arrays: dict[str, np.ndarray] = {"predicted": part.predicted, "sigma": part.sigma, "truth": part.truth}
    for t in TARGETS:
        arrays[f"abs_error_{t}"] = part.abs_error[t]
        arrays[f"spread_{t}"] = part.spread[t]
    meta = np.frombuffer(json.dumps({"identity": part.identity, "key": key}).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, meta=meta, **arrays)


def read_parts(folder: str | os.PathLike[str], identities: Sequence[str]) -> list[FieldPart]:
    """The saved numbers of the calibration fields ``identities`` (a calibration's ``fields``), in that order.

    Raises
    ------
    CalibrationError
        If a field's part is missing or unreadable.
    """
    by_identity = {}
    for path in sorted(Path(folder).glob("*.npz")):
        part = _load_part(path, None)
        if part is not None:
            by_identity[part.identity] = part
    missing = [i for i in identities if i not in by_identity]
    if missing:
        raise CalibrationError(f"{folder}: no readable part for {missing[0]}; calibrate again")
    return [by_identity[i] for i in identities]


def _load_part(path: Path, key: str | None) -> FieldPart | None:
    """A saved part, if it exists and was made by the same bundles and settings (``key``; None: any)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if key is not None and meta.get("key") != key:
                return None
            return FieldPart(identity=meta["identity"], predicted=data["predicted"], sigma=data["sigma"],
                             truth=data["truth"], abs_error={t: data[f"abs_error_{t}"] for t in TARGETS},
                             spread={t: data[f"spread_{t}"] for t in TARGETS})
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a damaged part is recomputed


def measure_calibration_field(predictor: Any, field: Any, *, seed: int, measure: Callable[..., Any] | None = None,
                              threads: int | None = None) -> FieldPart:
    """Predict a field's TTA variants, measure them and the real stains, keep the pixel samples."""
    from vstain.plate.index import field_identity
    from vstain.uncertainty.variants import measure_variants

    if measure is None:
        from vstain.evaluation.pipeline import measure_field as measure
    variants = predictor.predict_variants(field.read_brightfield(), magnification=field.magnification)
    measured = measure_variants(variants, magnification=field.magnification, measure=measure, threads=threads)
    truth_images = {t: field.read_target(t) for t in TARGETS}
    truth = measure(*(truth_images[t] for t in TARGETS), magnification=field.magnification, threads=threads)
    truth_values = dict(truth.features)
    keep = sample_pixels(truth_images[TARGETS[0]].size, seed=seed)
    abs_error, spread = {}, {}
    for t in TARGETS:
        error = np.abs(truth_images[t].astype(np.float64) - measured.images[t].astype(np.float64)).ravel()
        spreads = measured.spreads[t].ravel()
        abs_error[t] = (error if keep is None else error[keep]).astype(np.float32)
        spread[t] = (spreads if keep is None else spreads[keep]).astype(np.float32)
    return FieldPart(
        identity=field_identity(field),
        predicted=np.array([measured.features[c] for c in FEATURE_COLUMNS], dtype=np.float64),
        sigma=np.array([measured.sigmas[c] for c in FEATURE_COLUMNS], dtype=np.float64),
        truth=np.array([float(truth_values[c]) for c in FEATURE_COLUMNS], dtype=np.float64),
        abs_error=abs_error,
        spread=spread,
    )


def calibration_from_parts(parts: Sequence[FieldPart], *, alpha: float, magnification: str,
                           bundles: Mapping[str, str], tta: int, margin: int = 0) -> Calibration:
    """Conformal quantiles per feature and risk-control multipliers per stain from the fields' numbers.

    The NaN policy (src/vstain/uncertainty/calibration.py, ``NAN_POLICY``) applies: a field whose
    real-stain feature is not finite gives no score for it; a prediction that is not finite counts as 0.
    """
    alpha = check_alpha(alpha)
    n = len(parts)
    check_enough(n, alpha)
    predicted = np.stack([p.predicted for p in parts])
    predicted = np.where(np.isfinite(predicted), predicted, 0.0)
    sigma = np.stack([p.sigma for p in parts])
    sigma = np.where(np.isfinite(sigma), sigma, 0.0)
    truth = np.stack([p.truth for p in parts])
    features: dict[str, FeatureCalibration] = {}
    for j, name in enumerate(FEATURE_COLUMNS):
        usable = np.isfinite(truth[:, j])
        skipped = [parts[i].identity for i in np.flatnonzero(~usable)]
        floor = feature_floor(predicted[usable, j], truth[usable, j])
        k = int(usable.sum())
        if k < minimum_fields(alpha):
            features[name] = FeatureCalibration(
                quantile=None, floor=floor, n=k, skipped_fields=skipped,
                reason=f"{k} fields with a value on the real stains; {1 - alpha:.0%} needs {minimum_fields(alpha)}")
            continue
        scores = normalised_scores(predicted[usable, j], truth[usable, j], np.maximum(sigma[usable, j], floor))
        features[name] = FeatureCalibration(quantile=conformal_quantile(scores, alpha), floor=floor, n=k,
                                            skipped_fields=skipped)
    pixels: dict[str, PixelCalibration] = {}
    for t in TARGETS:
        # As for the features: the spread is trusted where it says more than the typical error.
        floor = max(1.0, float(np.median(np.concatenate([p.abs_error[t] for p in parts]))))
        needed = [np.sort(needed_multipliers(np.zeros_like(p.abs_error[t]), p.abs_error[t], p.spread[t], floor))
                  for p in parts]
        multiplier = risk_control_lambda(needed, alpha)
        risk = float(np.mean([field_loss(f, multiplier) for f in needed]))
        pixels[t] = PixelCalibration(multiplier=multiplier, floor=floor, n=n, calibration_risk=risk)
    return Calibration(alpha=alpha, magnification=magnification, bundles=dict(bundles), tta=tta, margin=margin,
                       fields=[p.identity for p in parts], features=features, pixels=pixels,
                       vstain_version=__version__,
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def calibrate(
    models: Sequence[str | os.PathLike[str]],
    plate: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    alpha: float = 0.1,
    split: str | os.PathLike[str] | None = None,
    subset: str = CALIBRATION,
    magnification: str | None = None,
    device: str = "cpu",
    mode: str = "whole",
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
    measure: Callable[..., Any] | None = None,
    threads: int | None = None,
    parts: str | os.PathLike[str] | None = None,
) -> Calibration:
    """Calibrate ``models`` on a plate's calibration fields and write ``out`` (calibration.json).

    Parameters
    ----------
    models
        Bundles or folders of bundles predicting nuclei, lipids and cytoplasm at one magnification.
    plate
        Plate folder or OME-Zarr plate with brightfield and the three real stains.
    out
        Where ``calibration.json`` goes (written atomically); per-field numbers go to ``<out>.parts/``.
    alpha
        Miscoverage: the intervals should miss on at most this fraction of new fields (features) or
        of a new field's pixels (pixel maps, in expectation).
    split, subset
        A split CSV whose ``subset`` fields (default ``calibration``) are used; without it every
        field of the plate is (a plate of its own). Fields a bundle was trained or validated on are
        refused.
    magnification
        Which fields (needed when the plate holds several).
    device, mode, batch_size
        As for ``vstain predict``; TTA is always 8.
    seed
        Drives the pixel sample of fields larger than 512².
    measure, threads
        The measurement (default the CellProfiler-equivalent pipeline) and its threads per field.
    parts
        Folder of the per-field numbers (default ``<out>.parts``); calibrations at several levels
        may share one.

    Returns
    -------
    Calibration
        What was written to ``out``.
    """
    from tqdm import tqdm

    from vstain.inference.predictor import Predictor
    from vstain.plate.index import index_plate

    alpha = check_alpha(alpha)
    out = Path(out)
    if out.is_dir():
        raise VstainError(f"{out}: is a folder; give the calibration file's path, e.g. {out / 'calibration.json'}")
    predictor = Predictor(list(models), device=device, mode=mode, tta=8, uncertainty=True, batch_size=batch_size)
    if magnification is None:
        if len(predictor.magnifications) != 1:
            raise VstainError(f"models for several magnifications ({', '.join(predictor.magnifications)}); "
                              "pass --magnification")
        magnification = predictor.magnifications[0]
    missing = [t for t in TARGETS if t not in predictor.targets(magnification)]
    if missing:
        raise CalibrationError(f"the features need all three stains: no {magnification} model for "
                               f"{', '.join(missing)} among --models")
    index = index_plate(plate, magnification=magnification)
    index.raise_for_errors()
    fields = select_calibration_fields(index, magnification=magnification, split=split, subset=subset)
    check_not_trained_on(fields, predictor.bundles_for(magnification))
    check_enough(len(fields), alpha)
    hashes = {t: predictor.provenance(magnification, t)["model"]["sha256"] for t in TARGETS}
    key = json.dumps({"bundles": hashes, "settings": predictor.provenance(magnification, TARGETS[0])["settings"],
                      "seed": seed, "max_pixels": MAX_PIXELS_PER_FIELD}, sort_keys=True)
    parts_dir = Path(parts) if parts is not None else out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    done: list[FieldPart] = []
    for field in tqdm(fields, unit="field", desc="calibrate", disable=not progress, file=sys.stderr):
        path = _part_path(parts_dir, field)
        part = _load_part(path, key)
        if part is None:
            # The pixel sample depends on the field, not on its position in the list.
            field_seed = seed + zlib.crc32(f"{field.well}/{field.field}".encode())
            part = measure_calibration_field(predictor, field, seed=field_seed, measure=measure, threads=threads)
            _save_part(path, part, key)
        done.append(part)
    margin = int(predictor.settings()["tiler"].get("margin", 0))
    calibration = calibration_from_parts(done, alpha=alpha, magnification=magnification, bundles=hashes, tta=8,
                                         margin=margin)
    calibration.save(out)
    return calibration
