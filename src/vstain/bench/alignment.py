"""Accuracy of ``vstain align`` on synthetic plates whose offsets are known (``plate.json``).

:func:`alignment_errors` aligns a plate written by ``vstain synth`` and compares every field's
estimate with the true offset the generator recorded; :func:`error_summary` gives the median
and 95th percentile of ``|error|`` per magnification and stain (per axis, in pixels).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from vstain.alignment.estimate import Reference
from vstain.alignment.plate import DEFAULT_REFERENCE, Alignment, align_fields
from vstain.plate.index import index_plate
from vstain.vocabulary import CHANNEL_NAME_TARGETS


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
