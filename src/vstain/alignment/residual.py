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
from vstain.alignment.offsets import MIN_CONFIDENCE
from vstain.plate.index import index_plate

if TYPE_CHECKING:
    from vstain.evaluation.report import ReportSection

#: A residual above this many pixels (median over a stain's confident fields) is worth a warning.
WARN_PX = 0.5


def _confident(group: pd.DataFrame) -> pd.DataFrame:
    """The rows whose residual is confident: an unconfident one can be a wild number on a field
    with a few large cells (60x on small fields), and must not make a plate look misaligned.
    """
    return group[group["confidence"] >= MIN_CONFIDENCE]


def residual_offsets(
    truth: str | os.PathLike[str], pred: str | os.PathLike[str], *, magnification: str | None = None
) -> pd.DataFrame:
    """Per field and stain present in both: the offset ``(dy, dx)`` of the real stain against the prediction.

    Same sign convention as ``vstain align`` (docs/alignment.md): a structure at prediction pixel
    ``(y, x)`` is at truth pixel ``(y - dy, x - dx)``. Columns: ``magnification, well, field,
    stain, dy_px, dx_px, confidence``. Warnings and summaries use the fields whose confidence is at
    least :data:`vstain.alignment.offsets.MIN_CONFIDENCE`.
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
    """One line per magnification and stain whose median residual over its confident fields exceeds ``limit`` px."""
    lines = []
    for (mag, stain), group in table.groupby(["magnification", "stain"], sort=False):
        sure = _confident(group)
        size = np.hypot(sure["dy_px"], sure["dx_px"])
        if len(sure) and float(np.median(size)) > limit:
            lines.append(f"{mag} {stain}: predictions and real stains are {float(np.median(size)):.1f} px apart "
                         f"(median over {len(sure)} confident of {len(group)} fields; "
                         f"dy {sure['dy_px'].median():+.2f}, dx {sure['dx_px'].median():+.2f}): "
                         "the plate looks misaligned; see docs/alignment.md")
    return lines


def residual_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per magnification and stain: fields, how many confident, and over those the median residual size
    and direction and the largest residual (px; empty where no field was confident).
    """
    rows = []
    for (mag, stain), group in table.groupby(["magnification", "stain"], sort=False):
        sure = _confident(group)
        size = np.hypot(sure["dy_px"], sure["dx_px"])
        measured = len(sure) > 0
        rows.append({"magnification": mag, "stain": stain, "fields": len(group), "confident": len(sure),
                     "median_px": round(float(np.median(size)), 2) if measured else float("nan"),
                     "dy_px": round(float(sure["dy_px"].median()), 2) if measured else float("nan"),
                     "dx_px": round(float(sure["dx_px"].median()), 2) if measured else float("nan"),
                     "max_px": round(float(size.max()), 2) if measured else float("nan"),
                     "confidence": round(float(group["confidence"].median()), 2)})
    return pd.DataFrame(rows, columns=["magnification", "stain", "fields", "confident", "median_px", "dy_px", "dx_px",
                                       "max_px", "confidence"])


def residual_section(table: pd.DataFrame, *, limit: float = WARN_PX) -> "ReportSection":
    """``report.html``'s section on residual offsets: the summary per stain and the warnings."""
    import html

    from vstain.evaluation.report import ReportSection

    summary = residual_summary(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in summary.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in summary.itertuples(index=False))
    warnings = residual_warnings(table, limit=limit)
    unmeasured = [f"{r.magnification} {r.stain}" for r in summary.itertuples() if r.confident == 0]
    verdict = ("".join(f"<p><b>warning:</b> {html.escape(line)}</p>" for line in warnings) if warnings else
               f"<p>Every stain's median residual over its confident fields is within {limit} px: predictions "
               "and real stains line up.</p>")
    if unmeasured:
        verdict += (f"<p>No confident residual for {html.escape(', '.join(unmeasured))}: too few distinct "
                    "structures per field to tell (e.g. a few large cells on a small 60x field).</p>")
    text = ("<p>The offset left between each real stain and its prediction (same modality, band-passed "
            "cross-correlation; per field in <code>residual_offsets.csv</code>). A prediction scored against a "
            "shifted stain is penalised for being right: a large residual means the plate is misaligned, not "
            "necessarily that the model is poor (docs/alignment.md).</p>")
    return ReportSection("Residual offsets", f"{text}{verdict}<table><tr>{head}</tr>{body}</table>")
