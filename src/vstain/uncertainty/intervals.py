"""``vstain predict --calibration``: predictions with calibrated pixel and feature intervals.

For every field (TTA 8, src/vstain/uncertainty/variants.py) the output folder gets:

.. code-block:: text

    <name>.tif               the TTA mean, as vstain predict --tta 8 writes it
    uncertainty/<name>.tif   the TTA spread (population std, rounded counts)
    lower/<name>.tif         max(0, prediction − λ·max(spread, floor)), rounded down
    upper/<name>.tif         prediction + λ·max(spread, floor), rounded up (clipped to 65535)
    intervals/<mag>_<well>_F<nnn>.json   the field's feature intervals (written last: marks it done)
    intervals.csv            every field x feature: prediction, lower, upper, tta_sigma (long format)
    intervals.json           calibration used, alpha, fields, timings

``<name>`` is the CV7000 name of the stain's channel. A feature's interval is
``prediction ± q·max(σ_TTA, floor)`` with ``q`` and the floor from ``calibration.json``; features
the calibration could not give an interval have NaN bounds. A field whose interval file exists (made
with the same calibration) is skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from vstain.atomic import atomic_path, write_text_atomic
from vstain.errors import PlateError, VstainError
from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.evaluation.coverage import INTERVAL_COLUMNS, INTERVALS_CSV, LOWER_DIR, UPPER_DIR
from vstain.uncertainty.calibration import Calibration
from vstain.uncertainty.variants import VariantMeasurement, feature_stain, measure_variants
from vstain.vocabulary import TARGETS

if TYPE_CHECKING:
    from vstain.plate.index import FieldKey

INTERVALS_DIR = "intervals"


def pixel_bounds(image: np.ndarray, spread: np.ndarray, *, multiplier: float, floor: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """uint16 lower and upper maps: ``image ∓ multiplier·max(spread, floor)``, rounded outwards, clipped."""
    half = multiplier * np.maximum(np.asarray(spread, dtype=np.float64), floor)
    centre = np.asarray(image, dtype=np.float64)
    top = np.iinfo(np.uint16).max
    lower = np.clip(np.floor(centre - half), 0, top).astype(np.uint16)
    upper = np.clip(np.ceil(centre + half), 0, top).astype(np.uint16)
    return lower, upper


def feature_intervals(measured: VariantMeasurement, calibration: Calibration) -> list[dict[str, Any]]:
    """One row per feature: the prediction (non-finite counts as 0, as in calibration) and its interval."""
    rows = []
    for name in FEATURE_COLUMNS:
        value = measured.features[name]
        value = value if math.isfinite(value) else 0.0
        sigma = measured.sigmas[name]
        sigma = sigma if math.isfinite(sigma) else 0.0
        entry = calibration.features.get(name)
        if entry is None or entry.quantile is None:
            lower = upper = math.nan
        else:
            # Widened by a relative 1e-9 (rounded outwards, as the pixel maps): the calibration field whose
            # score is the quantile lies exactly on the bound, and float rounding must not put it outside.
            half = entry.quantile * max(sigma, entry.floor) * (1 + 1e-9)
            lower, upper = value - half, value + half
        rows.append({"feature": name, "stain": feature_stain(name), "prediction": value,
                     "lower": lower, "upper": upper, "tta_sigma": sigma})
    return rows


def _part_name(field: Any) -> str:
    return f"{field.magnification}_{field.well}_F{field.field:03d}.json"


def predict_intervals(
    models: Sequence[str | os.PathLike[str]],
    plate: str | os.PathLike[str],
    output: str | os.PathLike[str],
    calibration: str | os.PathLike[str],
    *,
    alpha: float | None = None,
    device: str = "cpu",
    mode: str = "whole",
    batch_size: int = 4,
    overwrite: bool = False,
    progress: bool = True,
    measure: Callable[..., Any] | None = None,
    threads: int | None = None,
    keys: Iterable[FieldKey] | None = None,
) -> dict[str, Any]:
    """Predict every field of ``plate`` at the calibration's magnification with intervals (module docstring).

    Parameters
    ----------
    models
        The bundles the calibration was made for (refused otherwise, in one line).
    plate, output
        Plate folder (or OME-Zarr plate) and the output folder (TIFFs; created).
    calibration
        ``calibration.json`` from ``vstain calibrate``.
    alpha
        The level asked for; refused if the calibration was made for another (None: the file's).
    device, mode, batch_size
        As for ``vstain predict``; TTA is always 8.
    overwrite
        Recompute fields whose outputs exist.
    measure, threads
        The measurement (default the CellProfiler-equivalent pipeline) and its threads per field.
    keys
        Only these fields (``(magnification, well, field)``); default every field at the magnification.

    Returns
    -------
    dict
        The manifest written to ``intervals.json``.
    """
    from tqdm import tqdm

    from vstain.inference.predictor import UNCERTAINTY_DIR, Predictor
    from vstain.plate.index import index_plate
    from vstain.plate.tiff import tiff_description, write_tiff

    started = time.perf_counter()
    cal = Calibration.load(calibration)
    # the calibration's margin: the intervals hold for predictions made as the calibration's were
    predictor = Predictor(list(models), device=device, mode=mode, tta=8, uncertainty=True, batch_size=batch_size,
                          margin=cal.margin)
    magnification = cal.magnification
    if magnification not in predictor.magnifications:
        raise VstainError(f"{calibration}: made for {magnification} models; --models holds "
                          f"{', '.join(predictor.magnifications)} models")
    missing = [t for t in TARGETS if t not in predictor.targets(magnification)]
    if missing:
        raise VstainError(f"intervals need all three stains: no {magnification} model for {', '.join(missing)}")
    hashes = {t: predictor.provenance(magnification, t)["model"]["sha256"] for t in TARGETS}
    cal.check_matches(hashes, magnification=magnification, alpha=alpha, source=calibration)

    index = index_plate(plate, magnification=magnification)
    index.raise_for_errors()
    fields = index.select(magnification=magnification, keys=keys)
    if not fields:
        raise PlateError(f"{plate}: no {magnification} fields with 7 brightfield planes")
    out = Path(output)
    inputs = {f.brightfield[0].parent.resolve() for f in fields}
    if out.resolve() in inputs:
        raise PlateError(f"{out}: is the plate's image folder; choose another --output")
    folders = {name: out / name for name in (UNCERTAINTY_DIR, LOWER_DIR, UPPER_DIR, INTERVALS_DIR)}
    for folder in (out, *folders.values()):
        folder.mkdir(parents=True, exist_ok=True)
    descriptions = predictor.descriptions(magnification)
    calibration_hash = hashlib.sha256(Path(calibration).read_bytes()).hexdigest()

    rows: list[dict[str, Any]] = []
    computed = skipped = 0
    for field in tqdm(fields, unit="field", desc="predict+intervals", disable=not progress, file=sys.stderr):
        part = folders[INTERVALS_DIR] / _part_name(field)
        if not overwrite and part.is_file():
            saved = json.loads(part.read_text("utf-8"))
            if saved.get("calibration_sha256") != calibration_hash:
                raise VstainError(f"{part}: made with another calibration; pass --overwrite to recompute, "
                                  "or use another --output")
            rows.extend(saved["rows"])
            skipped += 1
            continue
        if not overwrite:
            # Outputs without this run's interval file: a killed run of the same models (recomputed), or
            # something else (another model, other settings): refuse rather than mix them.
            stale = [path for t in TARGETS for path in [out / field.target_filename(t)]
                     if path.exists() and tiff_description(path) != descriptions[t]]
            if stale:
                raise VstainError(f"{stale[0]}: exists but was not written with this calibration; pass --overwrite "
                                  "to recompute, or use another --output")
        variants = predictor.predict_variants(field.read_brightfield(), magnification=magnification)
        measured = measure_variants(variants, magnification=magnification, measure=measure, threads=threads)
        for t in TARGETS:
            name = field.target_filename(t)
            pixels = cal.pixels[t]
            lower, upper = pixel_bounds(measured.images[t], measured.spreads[t],
                                        multiplier=pixels.multiplier, floor=pixels.floor)
            spread = np.clip(np.rint(measured.spreads[t]), 0, 65535).astype(np.uint16)
            write_tiff(out / name, measured.images[t], description=descriptions[t])
            write_tiff(folders[UNCERTAINTY_DIR] / name, spread, description=descriptions[f"{t}:uncertainty"])
            write_tiff(folders[LOWER_DIR] / name, lower, description=descriptions[t])
            write_tiff(folders[UPPER_DIR] / name, upper, description=descriptions[t])
        field_rows = [{"magnification": magnification, "well": field.well, "field": f"F{field.field:03d}", **row}
                      for row in feature_intervals(measured, cal)]
        write_text_atomic(part, json.dumps({"calibration_sha256": calibration_hash, "rows": field_rows},
                                           allow_nan=True))
        rows.extend(field_rows)
        computed += 1
    table = pd.DataFrame(rows, columns=[*INTERVAL_COLUMNS, "tta_sigma"])
    with atomic_path(out / INTERVALS_CSV) as tmp:
        table.to_csv(tmp, index=False)
    manifest = {"calibration": str(Path(calibration).resolve()), "calibration_sha256": calibration_hash,
                "alpha": cal.alpha, "magnification": magnification, "bundles": hashes,
                "fields": {"total": len(fields), "predicted": computed, "skipped_existing": skipped},
                "seconds": round(time.perf_counter() - started, 3)}
    write_text_atomic(out / "intervals.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
