"""The offset left between predicted and real stains, per field: is a plate's scoring misaligned?

A prediction is in the brightfield frame (or moved into the stains' frame with
``vstain predict --frame fluorescence``); if the real stains sit a few pixels away, the score
penalises a prediction for being right. Prediction and truth are the same modality, so a plain
band-passed cross-correlation (:func:`vstain.alignment.estimate.estimate_offset`) measures the
residual directly. ``vstain evaluate`` writes it as ``residual_offsets.csv``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vstain.alignment.estimate import estimate_offset
from vstain.plate.index import index_plate

if TYPE_CHECKING:
    from vstain.evaluation.report import ReportSection

#: A residual above this many pixels (median over a stain's fields) is worth a warning.
WARN_PX = 0.5


def residual_offsets(
    truth: str | os.PathLike[str], pred: str | os.PathLike[str], *, magnification: str | None = None
) -> pd.DataFrame:
    """Per field and stain present in both: the offset ``(dy, dx)`` of the real stain against the prediction.

    Same sign convention as ``vstain align`` (docs/alignment.md): a structure at prediction pixel
    ``(y, x)`` is at truth pixel ``(y - dy, x - dx)``. Columns: ``magnification, well, field,
    stain, dy_px, dx_px, confidence``.
    """
    truth_index = index_plate(truth, magnification=magnification, require="targets")
    pred_index = index_plate(pred, magnification=magnification, require="targets")
    predicted = {f.key: f for f in pred_index.fields}
    rows = []
    for field in truth_index.fields:
        other = predicted.get(field.key)
        if other is None:
            continue
        for stain in field.targets:
            if stain not in other.targets:
                continue
            found = estimate_offset(other.read_target(stain), field.read_target(stain))
            rows.append({"magnification": field.magnification, "well": field.well, "field": field.field,
                         "stain": stain, "dy_px": round(found.dy, 3), "dx_px": round(found.dx, 3),
                         "confidence": round(found.confidence, 3)})
    return pd.DataFrame(rows, columns=["magnification", "well", "field", "stain", "dy_px", "dx_px", "confidence"])


def residual_warnings(table: pd.DataFrame, *, limit: float = WARN_PX) -> list[str]:
    """One line per magnification and stain whose median residual exceeds ``limit`` px."""
    lines = []
    for (mag, stain), group in table.groupby(["magnification", "stain"], sort=False):
        size = np.hypot(group["dy_px"], group["dx_px"])
        if float(np.median(size)) > limit:
            lines.append(f"{mag} {stain}: predictions and real stains are {float(np.median(size)):.1f} px apart "
                         f"(median over {len(group)} fields; dy {group['dy_px'].median():+.2f}, dx "
                         f"{group['dx_px'].median():+.2f}): the plate looks misaligned; see docs/alignment.md")
    return lines


def residual_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per magnification and stain: fields, median residual size and direction, largest residual (px)."""
    rows = []
    for (mag, stain), group in table.groupby(["magnification", "stain"], sort=False):
        size = np.hypot(group["dy_px"], group["dx_px"])
        rows.append({"magnification": mag, "stain": stain, "fields": len(group),
                     "median_px": round(float(np.median(size)), 2), "dy_px": round(float(group["dy_px"].median()), 2),
                     "dx_px": round(float(group["dx_px"].median()), 2), "max_px": round(float(size.max()), 2),
                     "confidence": round(float(group["confidence"].median()), 2)})
    return pd.DataFrame(rows, columns=["magnification", "stain", "fields", "median_px", "dy_px", "dx_px", "max_px",
                                       "confidence"])


def residual_section(table: pd.DataFrame, *, limit: float = WARN_PX) -> "ReportSection":
    """``report.html``'s section on residual offsets: the summary per stain and the warnings."""
    import html

    from vstain.evaluation.report import ReportSection

    summary = residual_summary(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in summary.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in summary.itertuples(index=False))
    warnings = residual_warnings(table, limit=limit)
    verdict = ("".join(f"<p><b>warning:</b> {html.escape(line)}</p>" for line in warnings) if warnings else
               f"<p>Every stain's median residual is within {limit} px: predictions and real stains line up.</p>")
    text = ("<p>The offset left between each real stain and its prediction (same modality, band-passed "
            "cross-correlation; per field in <code>residual_offsets.csv</code>). A prediction scored against a "
            "shifted stain is penalised for being right: a large residual means the plate is misaligned, not "
            "necessarily that the model is poor (docs/alignment.md).</p>")
    return ReportSection("Residual offsets", f"{text}{verdict}<table><tr>{head}</tr>{body}</table>")
