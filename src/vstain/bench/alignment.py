"""Accuracy of ``vstain align`` on synthetic plates whose offsets are known (``plate.json``), and what it buys.

:func:`alignment_errors` aligns a plate written by ``vstain synth`` and compares every field's
estimate with the true offset the generator recorded; :func:`error_summary` gives the median
and 95th percentile of ``|error|`` per magnification and stain (per axis, in pixels).

:func:`run_alignment_training` trains the CPU recipe with ``data.alignment: none`` and ``auto`` on
the same misaligned plate (and, as a control, on an aligned one), with the same budget, and scores
both on held-out fields in the stains' own (fluorescence) frame: ``none`` models predict in the
only frame they know, ``auto`` models are moved by the offsets they were trained with
(``vstain predict --frame fluorescence``). ``vstain bench alignment --out DIR`` runs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vstain.alignment.estimate import Reference
from vstain.alignment.plate import DEFAULT_REFERENCE, Alignment, align_fields
from vstain.plate.index import index_plate
from vstain.vocabulary import ALIGNMENT_MODES, CHANNEL_NAME_TARGETS, TEST, VALIDATION


def true_offsets(plate: str | os.PathLike[str]) -> dict[tuple[str, str, int, str], tuple[float, float]]:
    """``(magnification, well, field, stain) -> (dy, dx)`` from a synthetic plate's ``plate.json``."""
    manifest = json.loads((Path(plate) / "plate.json").read_text())
    truth = {}
    for entry in manifest["fields"]:
        for channel, (dy, dx) in entry["shift_px"].items():
            truth[(entry["magnification"], entry["well"], int(entry["field"].lstrip("F")),
                   CHANNEL_NAME_TARGETS[channel])] = (float(dy), float(dx))
    return truth


def alignment_errors(
    plate: str | os.PathLike[str], *, reference: Reference = DEFAULT_REFERENCE
) -> tuple[pd.DataFrame, Alignment]:
    """Align a synthetic plate and compare with its true offsets: one row per field and stain.

    Columns: the offsets table's, ``true_dy_px, true_dx_px``, ``error_px`` (largest per-axis
    error of the offset in use) and ``measured_error_px`` (of the field's own estimate).
    """
    truth = true_offsets(plate)
    index = index_plate(plate)
    alignment = align_fields(index.fields, reference=reference)
    rows = []
    for r in alignment.table.rows:
        dy, dx = truth[(r.magnification, r.well, r.field, r.stain)]
        rows.append({**r.__dict__, "true_dy_px": dy, "true_dx_px": dx,
                     "error_px": max(abs(r.dy_px - dy), abs(r.dx_px - dx)),
                     "measured_error_px": max(abs(r.measured_dy_px - dy), abs(r.measured_dx_px - dx))})
    return pd.DataFrame(rows), alignment


def error_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """Per magnification and stain: fields, share measured, median / 95th percentile / max of the errors (px)."""
    out = []
    for (mag, stain), group in errors.groupby(["magnification", "stain"], sort=False):
        used, own = group["error_px"].to_numpy(), group["measured_error_px"].to_numpy()
        out.append({"magnification": mag, "stain": stain, "fields": len(group),
                    "measured": float(np.mean(group["source"] == "measured")),
                    "median_px": float(np.median(used)), "p95_px": float(np.percentile(used, 95)),
                    "max_px": float(used.max()), "own_median_px": float(np.median(own)),
                    "own_p95_px": float(np.percentile(own, 95))})
    return pd.DataFrame(out).round(3)


#: Per-axis cap of the misaligned plate's shifts (``vstain synth --max-shift``): 8 gives shifts of
#: 3.5-6.8 px (length; seeds 0 and 1), the 3-6 px the comparison is specified for. Before 2026-12-02
#: the benchmark used 6 (2.6-5.1 px).
MISALIGNED_MAX_SHIFT_PX = 8.0
#: The comparison's plates: misaligned (smooth per site; the cap is a parameter) and aligned.
TRAINING_PLATES = ("misaligned", "aligned")
#: Training length per stain (the quality benchmark's budget).
TRAINING_EPOCHS = {"nuclei": 10, "lipids": 3, "cytoplasm": 3}


def run_alignment_training(out: str | os.PathLike[str], *, seed: int = 0, smoke: bool = False,
                           max_shift_px: float = MISALIGNED_MAX_SHIFT_PX, log: Any = print) -> dict[str, Any]:
    """``none`` vs ``auto`` on a misaligned and an aligned plate (module docstring); writes ``training.json/.md``.

    Each trial is kept in ``out/<plate>/<alignment>/trial.json``; a rerun skips trials already done.
    ``max_shift_px`` caps the misaligned plate's shifts per axis; a rerun into a folder whose plate
    was made with another cap is refused (its trials would not be comparable).
    """
    from vstain.bench.quality import _COMMON
    from vstain.demo.summary import _method_summary
    from vstain.demo.trial import Clock, run_trial
    from vstain.errors import VstainError
    from vstain.plate.splits import random_split
    from vstain.synth.plate import generate_plate
    from vstain.training.recipes import cpu_recipe

    out = Path(out)
    wells, fields, size = (2, 4, (192, 192)) if smoke else (4, 6, (512, 512))
    steps = {s: (f"trainer.max_epochs={1 if smoke else e}",) + (("data.samples_per_epoch=8", "data.crop_size=96")
                                                               if smoke else ()) for s, e in TRAINING_EPOCHS.items()}
    results: dict[str, Any] = {}
    for plate_name in TRAINING_PLATES:
        shift = max_shift_px if plate_name == "misaligned" else 0.0
        folder = out / plate_name
        plate = folder / "plate"
        if (folder / "split.csv").is_file():
            made = json.loads((plate / "plate.json").read_text()).get("max_shift_px") or 0.0
            if float(made) != shift:
                raise VstainError(f"{plate}: made with --max-shift {made:g}, not {shift:g}; "
                                  "give another --out (or the same --max-shift) to compare like with like")
        else:
            generate_plate(plate, magnification="20x", wells=wells, fields=fields, seed=seed, size=size,
                           preset="reference", max_shift_px=shift, overwrite=True)
            keys = [f.key for f in index_plate(plate, magnification="20x").fields]
            random_split(keys, {TEST: 2 if smoke else 6, VALIDATION: 1 if smoke else 2}, seed=seed).save(
                folder / "split.csv")
        for alignment in ALIGNMENT_MODES:
            trial_dir = folder / alignment
            done = trial_dir / "trial.json"
            if done.is_file():
                results.setdefault(plate_name, {})[alignment] = json.loads(done.read_text())
                continue
            clock = Clock(lambda line, tag=f"{plate_name}/{alignment}": log(f"{tag} {line}"))
            trial = run_trial(plate, folder / "split.csv", trial_dir, magnification="20x", recipe=cpu_recipe("20x"),
                              seed=seed, clock=clock, overrides=(*_COMMON, f"data.alignment={alignment}"),
                              step_overrides=steps, frame="fluorescence" if alignment == "auto" else "brightfield")
            result = {"methods": {m: _method_summary(s) for m, s in trial.scores.items()},
                      "timings": dict(clock.timings), "max_shift_px": shift}
            done.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
            results.setdefault(plate_name, {})[alignment] = result
    summary = {"plates": results, "checks": alignment_training_checks(results), "smoke": smoke,
               "plate": f"vstain synth reference preset, 20x, {wells} wells x {fields} fields of {size[0]}x{size[1]}, "
                        f"misaligned with --max-shift {max_shift_px:g}"}
    (out / "training.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    (out / "training.md").write_text(alignment_training_markdown(summary))
    return summary


def alignment_training_checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: on the misaligned plate ``auto`` cuts the featurewise error by >= 25 % and
    lowers the pixelwise error; on the aligned plate it is no more than 2 % worse (score).
    """
    checks: dict[str, Any] = {}
    if "misaligned" in results and {"none", "auto"} <= set(results["misaligned"]):
        none, auto = (results["misaligned"][a]["methods"]["model"] for a in ("none", "auto"))
        cut = 1 - auto["featurewise"] / none["featurewise"]
        checks["misaligned_featurewise_cut"] = cut
        checks["misaligned_featurewise_target_met"] = bool(cut >= 0.25)
        checks["misaligned_pixelwise_lower"] = bool(auto["pixelwise"] < none["pixelwise"])
    if "aligned" in results and {"none", "auto"} <= set(results["aligned"]):
        none, auto = (results["aligned"][a]["methods"]["model"] for a in ("none", "auto"))
        change = auto["score"] / none["score"] - 1
        checks["aligned_score_change"] = change
        checks["aligned_target_met"] = bool(change <= 0.02)
    return checks


def alignment_training_markdown(summary: dict[str, Any]) -> str:
    """One row per plate and alignment setting: the model's and the linear baseline's scores."""
    lines = ["| plate | alignment | model score | pixelwise | featurewise | linear baseline score |",
             "| --- | --- | --- | --- | --- | --- |"]
    for plate_name, trials in summary["plates"].items():
        for alignment, result in trials.items():
            model, linear = result["methods"]["model"], result["methods"]["linear"]
            lines.append(f"| {plate_name} | {alignment} | {model['score']:.3f} | {model['pixelwise']:.3f} | "
                         f"{model['featurewise']:.3f} | {linear['score']:.3f} |")
    checks = summary["checks"]
    if "misaligned_featurewise_cut" in checks:
        cut = checks["misaligned_featurewise_cut"]
        lines.append(f"\nmisaligned plate: auto cuts the featurewise error by {cut:.1%} "
                     f"(target >= 25 %: {'met' if checks['misaligned_featurewise_target_met'] else 'not met'}); "
                     f"pixelwise lower: {'yes' if checks['misaligned_pixelwise_lower'] else 'no'}")
    if "aligned_score_change" in checks:
        lines.append(f"aligned plate: auto changes the score by {checks['aligned_score_change']:+.1%} "
                     f"(target <= +2 %: {'met' if checks['aligned_target_met'] else 'not met'})")
    return "\n".join(lines) + "\n"
