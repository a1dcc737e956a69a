"""A plate's alignment for people: a summary table per site and stain, and a plot of offset vs site."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from vstain.alignment.offsets import MIN_CONFIDENCE, OffsetRow, OffsetTable
from vstain.atomic import atomic_path


def _confident(row: OffsetRow) -> bool:
    return row.confidence >= MIN_CONFIDENCE


def site_summary(table: OffsetTable) -> pd.DataFrame:
    """One row per magnification, stain and site: the site offset, the spread over wells, fields measured.

    Columns: ``magnification, stain, field, dy_px, dx_px, spread_px`` (largest distance of a
    confident well's own estimate from the site offset), ``measured`` (wells whose own estimate was
    confident, of ``wells``) and ``confidence`` (median).
    """
    sites = table.site_offsets()
    rows = []
    for key, (dy, dx) in sites.items():
        mag, stain, number = key
        members = [r for r in table.rows if r.site == key]
        measured = [r for r in members if _confident(r)]
        spread = max((float(np.hypot(r.measured_dy_px - dy, r.measured_dx_px - dx)) for r in measured),
                     default=float("nan"))
        rows.append({"magnification": mag, "stain": stain, "field": f"F{number:03d}", "dy_px": round(dy, 2),
                     "dx_px": round(dx, 2), "spread_px": round(spread, 2),
                     "measured": f"{len(measured)}/{len(members)}",
                     "confidence": round(float(np.median([r.confidence for r in members])), 2)})
    return pd.DataFrame(rows, columns=["magnification", "stain", "field", "dy_px", "dx_px", "spread_px",
                                       "measured", "confidence"])


def plot_offsets(table: OffsetTable, path: str | os.PathLike[str]) -> Path:
    """PNG of dy and dx against the site (field number), one panel per magnification and axis.

    Each well's own estimate is a dot where it was confident; where it was not, the offset it uses
    is a hollow dot. Each stain's site offset is a line: a smooth curve shared by the wells is the
    optics; a dot off it is a field whose estimate was unreliable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mags = table.magnifications
    figure, axes = plt.subplots(len(mags), 2, figsize=(10, 3.2 * len(mags)), squeeze=False)
    colours = {"nuclei": "tab:blue", "lipids": "tab:green", "cytoplasm": "tab:red"}
    sites = table.site_offsets()
    for row, mag in enumerate(mags):
        for column, (axis_name, index) in enumerate((("dy", 0), ("dx", 1))):
            ax = axes[row][column]
            for stain in table.stains:
                rows = [r for r in table.rows if r.magnification == mag and r.stain == stain]
                if not rows:
                    continue
                colour = colours.get(stain, "black")
                keys = sorted(k for k in sites if k[0] == mag and k[1] == stain)
                ax.plot([k[2] for k in keys], [sites[k][index] for k in keys], "-", color=colour, label=stain)
                for r in rows:
                    own = _confident(r)
                    value = (r.measured_dy_px, r.measured_dx_px)[index] if own else r.offset[index]
                    ax.plot(r.field, value, "o", color=colour, markersize=4, markerfacecolor=colour if own else "none")
            ax.set_title(f"{mag}: {axis_name} (px)")
            ax.set_xlabel("site (field number)")
            ax.grid(alpha=0.3)
            if row == 0 and column == 0:
                ax.legend(fontsize=8)
    figure.suptitle("stain offset against brightfield: structure at brightfield (y, x) is at stain (y-dy, x-dx)",
                    fontsize=9)
    figure.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)
    return target
