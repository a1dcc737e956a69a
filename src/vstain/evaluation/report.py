"""``report.html``: the challenge score as something to look at, in one self-contained file.

Every figure is a PNG drawn with matplotlib's Agg renderer and embedded as base64, with inline
CSS and no script or external link, so the file opens offline and can be mailed as it is.
Field panels are downsampled (block mean for images, block max for outlines) to keep it small.
Callers add their own sections (e.g. a comparison with baselines) as :class:`ReportSection`
values, placed after the title; the page is never edited as text afterwards.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from vstain.atomic import write_text_atomic
from vstain.evaluation.coverage import COUNT_FEATURE, CoverageResult
from vstain.evaluation.metric import (
    PIXEL_CHANNELS,
    POLICY,
    ChallengeScore,
    FeaturewiseResult,
    PixelwiseResult,
    dominance_note,
    total_score,
)
from vstain.vocabulary import CELLPROFILER_NAMES, CHANNEL_NAME_TARGETS

#: Longest side of one downsampled field panel, in pixels.
PANEL_SIZE = 256
#: Features drawn in the error figure (all of them are in the table below it).
FIGURE_FEATURES = 30
_CHANNEL_NAMES = {
    channel: f"{channel} {target} ({CELLPROFILER_NAMES[target]})" for channel, target in CHANNEL_NAME_TARGETS.items()
}
_OUTLINE_COLOURS = {"nuclei": (0.0, 1.0, 1.0), "cells": (1.0, 0.85, 0.0)}
_GROUP_COLOURS = {
    "nuclei": "#4c72b0",
    "cells": "#dd8452",
    "Lipids": "#55a868",
    "Count": "#8172b3",
    "Granularity": "#937860",
}


@dataclass(frozen=True)
class ReportSection:
    """An extra section of the report: a heading and its body.

    ``body_html`` is inserted as it is (the caller escapes text in it); ``heading`` is escaped.
    """

    heading: str
    body_html: str

    def render(self) -> str:
        return f"<h2>{html.escape(self.heading)}</h2>\n{self.body_html}"


#: Builds extra sections from the scores of the evaluation being reported (see
#: :func:`vstain.evaluation.folders.evaluate_folders`).
SectionHook = Callable[[Sequence[ChallengeScore]], Sequence[ReportSection]]


@dataclass(frozen=True)
class FieldPanel:
    """One field to show: target and predicted images and their segmentations.

    ``truth`` and ``pred`` map ``C01``/``C02``/``C03`` to (H, W) images; ``truth_labels`` and
    ``pred_labels`` map ``nuclei``/``cells`` to label images (either may be empty).
    """

    label: str
    truth: Mapping[str, np.ndarray]
    pred: Mapping[str, np.ndarray]
    truth_labels: Mapping[str, np.ndarray] = dataclass_field(default_factory=dict)
    pred_labels: Mapping[str, np.ndarray] = dataclass_field(default_factory=dict)


def render_report(
    scores: Sequence[ChallengeScore],
    *,
    panels: Mapping[str, Sequence[FieldPanel]] | None = None,
    title: str = "vstain evaluation",
    sources: Mapping[str, str] | None = None,
    sections: Sequence[ReportSection] = (),
) -> str:
    """The report as an HTML string.

    Parameters
    ----------
    scores
        One :class:`ChallengeScore` per magnification.
    panels
        ``{magnification: [FieldPanel, ...]}``: fields to show as truth / prediction / error.
    title
        Page title.
    sources
        Extra facts to list at the top (e.g. ``{"truth": "/data/plate"}``).
    sections
        Extra sections placed right after the title, in order.
    """
    panels = panels or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts.extend(section.render() for section in sections)
    if sources:
        parts.append(_definition_list(sources))
    parts.append(_summary_table(scores))
    for score in scores:
        parts.append(_magnification_section(score, panels.get(score.magnification, ())))
    parts.append("<h2>Policy</h2>")
    parts.append(_definition_list(POLICY))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    path: str | os.PathLike[str],
    scores: Sequence[ChallengeScore],
    *,
    panels: Mapping[str, Sequence[FieldPanel]] | None = None,
    title: str = "vstain evaluation",
    sources: Mapping[str, str] | None = None,
    sections: Sequence[ReportSection] = (),
) -> Path:
    """Write :func:`render_report` to ``path`` atomically."""
    return write_text_atomic(
        path, render_report(scores, panels=panels, title=title, sources=sources, sections=sections)
    )


def coverage_section(results: Sequence[CoverageResult]) -> ReportSection:
    """The intervals' empirical coverage (src/vstain/evaluation/coverage.py) as a report section."""
    parts = ["<p>How often the calibrated intervals of <code>vstain predict --calibration</code> held the value "
             "measured on the real stains (features: fraction of fields; pixels: fraction of a field's pixels, "
             "averaged over fields). Calibrated for coverage 1 &minus; alpha; with few fields the measured "
             "coverage wanders around it (docs/uncertainty.md).</p>"]
    for result in results:
        target = f"{1 - result.alpha:.2f}" if result.alpha is not None else "not recorded"
        rows = []
        for stain, values in result.stains.items():
            rows.append([stain, _num(values.get("feature_coverage")), _num(values.get("pixel_coverage"))])
        rows.append(["<b>overall</b>", _num(result.overall.get("feature_coverage")),
                     _num(result.overall.get("pixel_coverage"))])
        count = result.features.get(COUNT_FEATURE)
        count_text = (f"; nuclei count: coverage {_num(count['coverage'])}, mean width {_num(count['mean_width'])}"
                      if count else "")
        parts.append(f"<h3>{html.escape(result.magnification)}</h3><p>target coverage {target}; "
                     f"{result.overall.get('fields', 0)} fields{html.escape(count_text)}</p>")
        parts.append(_table(["stain", "feature coverage (mean over features)", "pixel coverage"], rows, escape=False))
        parts.append(_image(_coverage_figure(result), f"coverage per feature, {result.magnification}"))
    return ReportSection("Interval coverage", "\n".join(parts))


def _coverage_figure(result: CoverageResult) -> str:
    figure = _new_figure(7, 2.4, left=0.12, bottom=0.2)
    axes = figure.add_subplot()
    colours = {"nuclei": "#4c72b0", "lipids": "#55a868", "cytoplasm": "#c44e52"}
    for row, stain in enumerate(colours):
        values = [f["coverage"] for f in result.features.values() if f["stain"] == stain]
        jitter = np.linspace(-0.15, 0.15, len(values)) if values else []
        axes.scatter(values, row + np.asarray(jitter), s=9, color=colours[stain], alpha=0.7,
                     label="features" if row == 0 else None)
        pixel = result.stains.get(stain, {}).get("pixel_coverage")
        if pixel is not None and math.isfinite(pixel):
            axes.scatter([pixel], [row], marker="D", s=40, color="k", label="pixels" if row == 0 else None)
    if result.alpha is not None:
        axes.axvline(1 - result.alpha, color="k", lw=0.8, ls="--")
    axes.set_yticks(range(len(colours)), list(colours), fontsize=8)
    axes.set_ylim(len(colours) - 0.5, -0.5)
    axes.set_xlim(-0.02, 1.02)
    axes.set_xlabel("empirical coverage (dashed: 1 - alpha)", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(fontsize=7, frameon=False, loc="lower left")
    return _png(figure)


# -- sections ---------------------------------------------------------------------------------


def _summary_table(scores: Sequence[ChallengeScore]) -> str:
    rows = [
        [s.magnification, str(s.n_fields), _num(s.pixelwise.value), _num(s.featurewise.value), _num(s.score)]
        for s in scores
    ]
    total = total_score(scores)
    rows.append(["<b>total</b>", str(sum(s.n_fields for s in scores)), "", "", f"<b>{_num(total)}</b>"])
    return "<h2>Scores</h2><p>Lower is better (relative mean absolute errors).</p>" + _table(
        ["magnification", "fields", "pixelwise", "featurewise", "score"], rows, escape=False
    )


def _magnification_section(score: ChallengeScore, panels: Sequence[FieldPanel]) -> str:
    fw, pw = score.featurewise, score.pixelwise
    out = [f"<h2>{html.escape(score.magnification)}</h2>"]
    out.append("<h3>Pixel error per channel</h3>")
    out.append(_image(_pixel_error_figure(pw), f"pixelwise relative MAE per channel, {score.magnification}"))
    out.append(
        _table(
            ["channel", "MAE (counts)", "target median (counts)", "relative MAE"],
            [
                [c, _num(pw.mae.get(c)), _num(pw.target_median.get(c)), _num(pw.per_channel.get(c))]
                for c in pw.per_channel
            ],
        )
    )
    if pw.excluded_channels:
        out.append("<p>Excluded channels:</p>" + _definition_list(pw.excluded_channels))
    out.append(f"<h3>Feature error (relative MAE; the {FIGURE_FEATURES} largest)</h3>")
    note = dominance_note(fw)
    if note:
        out.append(f"<p><b>{html.escape(note)}.</b></p>")
    if fw.largest():
        out.append(_image(_feature_error_figure(fw), f"featurewise relative MAE, {score.magnification}"))
        out.append(_feature_bar_table(fw))
    else:
        out.append("<p>No feature could be scored.</p>")
    if fw.excluded_features:
        out.append(f"<h3>Excluded features ({len(fw.excluded_features)})</h3>")
        out.append(_definition_list(fw.excluded_features))
    for heading, cases in (
        ("Skipped target entries (target not finite)", fw.skipped_target_entries),
        ("Predictions counted as 0 (prediction not finite, target finite)", fw.prediction_counted_as_zero),
    ):
        if cases:
            out.append(f"<h3>{heading}: {sum(len(v) for v in cases.values())} entries</h3>")
            out.append(_definition_list({k: _short_list(v) for k, v in cases.items()}))
    for heading, labels in (
        ("Missing predictions", fw.missing_predictions),
        ("Extra predictions", fw.extra_predictions),
    ):
        if labels:
            out.append(
                f"<h3>{heading} ({len(labels)}; left out of both metrics)</h3>"
                f"<p>{html.escape(_short_list(labels, 50))}</p>"
            )
    if score.warnings:
        out.append(f"<h3>Warnings ({len(score.warnings)})</h3><ul>")
        out.extend(f"<li>{html.escape(w)}</li>" for w in score.warnings)
        out.append("</ul>")
    if panels:
        out.append("<h3>Fields</h3><p>Rows: channels. Columns: target, prediction, |target &minus; prediction|. "
                   "Outlines: nuclei (cyan) and cells (yellow) as segmented on each image; the error panel "
                   "shows the target's.</p>")
        for panel in panels:
            out.append(f"<h4>{html.escape(panel.label)}</h4>")
            out.append(_image(_field_figure(panel), f"target, prediction and error of {panel.label}"))
    return "\n".join(out)


# -- figures ----------------------------------------------------------------------------------


def _new_figure(width: float, height: float, **margins: float):
    from matplotlib.figure import Figure  # Agg is used by savefig; no pyplot state, no display

    figure = Figure(figsize=(width, height))
    # fixed margins: a layout engine would draw every figure twice
    figure.subplots_adjust(**{"left": 0.1, "right": 0.98, "top": 0.92, "bottom": 0.15, **margins})
    return figure


def _png(figure, dpi: int = 80) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pixel_error_figure(pw: PixelwiseResult) -> str:
    figure = _new_figure(5, 2.6, left=0.13, bottom=0.12)
    axes = figure.add_subplot()
    channels = list(pw.per_channel)
    values = [pw.per_channel[c] if math.isfinite(pw.per_channel[c]) else 0.0 for c in channels]
    colours = ["#4c72b0", "#55a868", "#c44e52"][: len(channels)]
    bars = axes.bar([_CHANNEL_NAMES.get(c, c) for c in channels], values, color=colours)
    axes.bar_label(bars, labels=[_num(pw.per_channel[c]) for c in channels], fontsize=8)
    axes.set_ylim(0, 1.15 * max(values + [1e-9]))  # room for the labels
    axes.axhline(pw.value if math.isfinite(pw.value) else 0, color="k", lw=0.8, ls="--", label=f"mean {_num(pw.value)}")
    axes.set_ylabel("MAE / target median")
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(fontsize=7, frameon=False)
    return _png(figure)


def _feature_group(name: str) -> str:
    for group in ("nuclei", "cells", "Lipids"):
        if f"_{group}_no_edge_" in name:
            return group
    return "Count" if name.startswith("Count_") else "Granularity"


def _feature_error_figure(fw: FeaturewiseResult) -> str:
    scored = fw.largest(FIGURE_FEATURES)
    height = 0.9 + 0.16 * len(scored)
    figure = _new_figure(8, height, left=0.5, right=0.97, top=1 - 0.15 / height, bottom=0.55 / height)
    axes = figure.add_subplot()
    positions = np.arange(len(scored))
    axes.barh(positions, [v for _, v in scored], color=[_GROUP_COLOURS[_feature_group(f)] for f, _ in scored])
    axes.set_yticks(positions, [f for f, _ in scored], fontsize=6.5)
    axes.set_ylim(len(scored) - 0.5, -0.5)  # largest error on top, no empty margin
    axes.axvline(fw.value, color="k", lw=0.8, ls="--")
    axes.set_xlabel(f"relative MAE (dashed: mean over all scored features, {_num(fw.value)})", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    from matplotlib.patches import Patch

    axes.legend(
        handles=[Patch(color=c, label=g) for g, c in _GROUP_COLOURS.items()],
        fontsize=6.5,
        frameon=False,
        loc="lower right",
    )
    return _png(figure)


def _feature_bar_table(fw: FeaturewiseResult) -> str:
    """Every scored feature as a table row with a CSS bar: all 99 readable at no drawing cost."""
    scored = fw.largest()
    top = max((v for _, v in scored), default=0.0) or 1.0
    rows = []
    for name, value in scored:
        width = 100.0 * value / top
        colour = _GROUP_COLOURS[_feature_group(name)]
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_num(value)}</td><td>{_num(fw.target_median.get(name))}</td>"
            f'<td class="bar"><div style="width:{width:.1f}%;background:{colour}"></div></td></tr>'
        )
    head = "<tr><th>feature</th><th>relative MAE</th><th>target median</th><th></th></tr>"
    summary = f"<summary>All {len(scored)} scored features</summary>"
    return f"<details>{summary}<table>{head}{''.join(rows)}</table></details>"


def _field_figure(panel: FieldPanel) -> str:
    from skimage.measure import block_reduce
    from skimage.segmentation import find_boundaries

    channels = [c for c in PIXEL_CHANNELS if c in panel.truth and c in panel.pred]
    shape = np.asarray(panel.truth[channels[0]]).shape
    factor = max(1, math.ceil(max(shape) / PANEL_SIZE))

    def shrink(image: np.ndarray) -> np.ndarray:
        return block_reduce(np.asarray(image, dtype=np.float32), (factor, factor), np.mean)

    def outlines(labels: Mapping[str, np.ndarray]) -> np.ndarray | None:
        if not any(k in labels for k in _OUTLINE_COLOURS):
            return None
        small = shrink(np.zeros(shape, np.float32)).shape
        rgba = np.zeros((*small, 4), np.float32)
        for name, colour in _OUTLINE_COLOURS.items():
            if name in labels:
                edge = block_reduce(find_boundaries(np.asarray(labels[name]), mode="inner"), (factor, factor), np.max)
                rgba[edge] = (*colour, 0.9)
        return rgba

    overlay_truth, overlay_pred = outlines(panel.truth_labels), outlines(panel.pred_labels)
    size = 2.4
    height = len(channels) * size * shape[0] / shape[1] + 0.4
    figure = _new_figure(
        3 * size, height, left=0.05, right=0.99, bottom=0.01, top=1 - 0.3 / height, wspace=0.04, hspace=0.06
    )
    grid = figure.subplots(len(channels), 3, squeeze=False)
    for row, channel in enumerate(channels):
        truth = np.asarray(panel.truth[channel], dtype=np.float32)
        pred = np.asarray(panel.pred[channel], dtype=np.float32)
        low, high = np.percentile(truth, [0.5, 99.5])
        error = shrink(np.abs(truth - pred))
        for col, (image, overlay, cmap, limits, name) in enumerate(
            (
                (shrink(truth), overlay_truth, "gray", (low, high), "target"),
                (shrink(pred), overlay_pred, "gray", (low, high), "prediction"),
                (error, overlay_truth, "magma", (0, max(float(np.percentile(error, 99.5)), 1.0)), "|error|"),
            )
        ):
            axes = grid[row, col]
            axes.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
            if overlay is not None:
                axes.imshow(overlay, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(name, fontsize=8)
            if col == 0:
                axes.set_ylabel(_CHANNEL_NAMES.get(channel, channel), fontsize=7)
    return _png(figure, dpi=round(PANEL_SIZE / size))


# -- HTML helpers -----------------------------------------------------------------------------


def _image(png_base64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{png_base64}" alt="{html.escape(alt)}">'


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _short_list(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" … ({len(items) - limit} more)" if len(items) > limit else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, escape: bool = True) -> str:
    cell = html.escape if escape else str
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _definition_list(items: Mapping[str, str]) -> str:
    entries = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items.items())
    return f"<dl>{entries}</dl>"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
    "th{background:#f3f3f3}td.bar{width:40%;text-align:left}td.bar div{height:.8em}"
    "details{margin:.5em 0}summary{cursor:pointer}td:first-child{text-align:left}"
    "img{max-width:100%;display:block;margin:.5em 0}"
    "dt{font-weight:600;font-family:monospace}dd{margin:0 0 .4em 1.5em}h2{border-bottom:1px solid #ddd}"
)
