"""The demo's results: the summary (``demo-summary.json``), the terminal table and the report section.

The comparison of the trained models with the baselines opens ``report.html`` as a
:class:`vstain.evaluation.report.ReportSection`, added through the evaluation's section hook.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from vstain.demo.baselines import METHODS
from vstain.demo.profiles import MAGNIFICATION, DemoProfile
from vstain.evaluation.metric import ChallengeScore
from vstain.evaluation.report import ReportSection
from vstain.vocabulary import CHANNEL_NAME_TARGETS

SUMMARY_NAME = "demo-summary.json"
COMPARISON_HEADING = "Demo: trained models against two baselines"


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _channel_title(channel: str) -> str:
    return f"{channel} {CHANNEL_NAME_TARGETS.get(channel, '')}".strip()


def feature_group(name: str) -> str:
    """Which part of the pipeline a CellProfiler feature column measures.

    One of ``counts``, ``nuclei``, ``cells``, ``lipids``, ``granularity`` or ``other``.
    """
    lowered = name.lower()
    if lowered.startswith("count_"):
        return "counts"
    if "granularity" in lowered:
        return "granularity"
    for group in ("nuclei", "cells", "lipids"):
        if f"_{group}_" in lowered:
            return group
    return "other"


def _group_errors(score: ChallengeScore) -> dict[str, float | None]:
    fw = score.featurewise
    groups: dict[str, list[float]] = {}
    for name, value in fw.per_feature.items():
        if name not in fw.excluded_features and math.isfinite(value):
            groups.setdefault(feature_group(name), []).append(value)
    return {g: _finite(sum(v) / len(v)) for g, v in sorted(groups.items())}


def _method_summary(score: ChallengeScore) -> dict[str, Any]:
    fw, pw = score.featurewise, score.pixelwise
    return {
        "score": _finite(score.score),
        "pixelwise": _finite(pw.value),
        "featurewise": _finite(fw.value),
        "pixelwise_per_channel": {_channel_title(c): _finite(v) for c, v in pw.per_channel.items()},
        "featurewise_per_group": _group_errors(score),
        # The features the featurewise error rests on, when three carry half of it (else empty).
        "featurewise_rests_on": [
            {"feature": f, "relative_mae": _finite(v), "target_median": _finite(fw.target_median.get(f))}
            for f, v in fw.dominated_by()
        ],
        "features_scored": sum(1 for f in fw.per_feature if f not in fw.excluded_features),
        "features_excluded": len(fw.excluded_features),
        "n_fields": score.n_fields,
    }


def _evaluation_notes(scores: Mapping[str, ChallengeScore]) -> list[str]:
    notes = []
    seen: set[str] = set()
    for score in scores.values():
        for warning in score.warnings:
            text = warning.split(": ", 2)[-1]
            if text not in seen:
                seen.add(text)
                notes.append(text)
    return notes[:10]


def summarise(scores: Mapping[str, ChallengeScore], *, settings: DemoProfile, seed: int,
              timings: Mapping[str, float], paths: Mapping[str, Any], test_labels: Sequence[str]) -> dict[str, Any]:
    """The content of ``demo-summary.json``: per-method scores, the verdicts, timings and paths."""
    model = _method_summary(scores["model"])
    baselines = {m: _method_summary(scores[m]) for m in METHODS if m != "model"}

    def beats(name: str) -> bool | None:
        a, b = model["score"], baselines[name]["score"]
        return None if a is None or b is None else a < b

    return {
        "model": model,
        "baselines": baselines,
        "model_beats": {name: beats(name) for name in baselines},
        "metric": "challenge score = (pixelwise + featurewise) / 2, relative MAEs, lower is better",
        "evaluation_notes": _evaluation_notes(scores),
        "heldout_fields": list(test_labels),
        "profile": settings.name,
        "seed": seed,
        "plate": {"wells": settings.wells, "fields_per_well": settings.fields_per_well,
                  "size": list(settings.size), "magnification": MAGNIFICATION},
        "timings": dict(timings),
        "paths": dict(paths),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The terminal table: one row per method (score, pixelwise, featurewise, per-channel pixel error)."""

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = [("model (trained)", summary["model"])]
    rows += [(name, summary["baselines"][name]) for name in summary["baselines"]]
    channels = list(summary["model"]["pixelwise_per_channel"])
    header = f"{'method':<17}{'score':>9}{'pixelwise':>11}{'featurewise':>13}" + "".join(f"{c:>14}" for c in channels)
    lines = [f"test fields: {', '.join(summary['heldout_fields'])} (lower is better)", header, "-" * len(header)]
    for name, entry in rows:
        lines.append(f"{name:<17}{num(entry['score']):>9}{num(entry['pixelwise']):>11}{num(entry['featurewise']):>13}"
                     + "".join(f"{num(entry['pixelwise_per_channel'].get(c)):>14}" for c in channels))
    verdicts = [f"{'beats' if ok else 'cannot be compared with' if ok is None else 'does NOT beat'} {name}"
                for name, ok in summary["model_beats"].items()]
    lines.append("model " + " and ".join(verdicts) + " on the challenge score")
    for note in summary["evaluation_notes"]:
        lines.append(f"note: {note}")
    timings = summary["timings"]
    train_s = sum(v for k, v in timings.items() if k.startswith("train_"))
    lines.append(f"time: {timings['total']:.0f} s in all (training {train_s:.0f} s, "
                 f"evaluation {sum(v for k, v in timings.items() if k.startswith('evaluate_')):.0f} s); "
                 f"{timings.get('cpu_total', 0):.0f} CPU-seconds")
    paths = summary["paths"]
    lines += [
        f"report:      {paths['report']}",
        f"summary:     {Path(paths['out']) / SUMMARY_NAME}",
        f"models:      {', '.join(paths['models'].values())}",
        f"predictions: {paths['predictions']['model']} (baselines beside it)",
        f"evaluation:  {Path(paths['evaluation']['model']).parent}/<method>/ (features, scores.json)",
        f"plate:       {paths['plate']}  split: {paths['split']}",
    ]
    return "\n".join(lines)


def _comparison_figure(scores: Mapping[str, ChallengeScore]) -> str:
    """Pixel and feature-group errors per method, as a base64 PNG (no pyplot state)."""
    import numpy as np
    from matplotlib.figure import Figure

    channels = list(scores["model"].pixelwise.per_channel)
    groups = sorted({g for s in scores.values() for g in _group_errors(s)})
    figure = Figure(figsize=(9, 3))
    axes = figure.subplots(1, 2)
    width = 0.8 / len(scores)
    for i, (method, score) in enumerate(scores.items()):
        values = [score.pixelwise.per_channel.get(c, math.nan) for c in channels]
        axes[0].bar(np.arange(len(channels)) + i * width, values, width, label=method)
        errors = _group_errors(score)
        axes[1].bar(np.arange(len(groups)) + i * width,
                    [math.nan if errors.get(g) is None else errors[g] for g in groups], width, label=method)
    axes[1].set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    axes[0].set_xticks(np.arange(len(channels)) + 0.4 - width / 2, [_channel_title(c) for c in channels])
    axes[0].set_title("pixelwise relative MAE", fontsize=9)
    axes[1].set_title("featurewise relative MAE by feature group", fontsize=9)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def comparison_section(scores: Mapping[str, ChallengeScore], *, settings: DemoProfile, seed: int,
                       test_labels: Sequence[str]) -> ReportSection:
    """The report section comparing every method (``scores`` by method, the trained models first)."""

    def num(value: float | None) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"

    channels = list(scores["model"].pixelwise.per_channel)
    groups = sorted({g for s in scores.values() for g in _group_errors(s)})
    head = ["method", "score", "pixelwise", "featurewise"] + [_channel_title(c) for c in channels] \
        + [f"features: {g}" for g in groups]
    rows = []
    for method, score in scores.items():
        group_errors = _group_errors(score)
        rows.append([method, num(score.score), num(score.pixelwise.value), num(score.featurewise.value)]
                    + [num(score.pixelwise.per_channel.get(c)) for c in channels]
                    + [num(group_errors.get(g)) for g in groups])
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows) + "</table>"
    body = (
        f"<p>Synthetic {MAGNIFICATION} plate, {settings.wells} wells &times; {settings.fields_per_well} fields of "
        f"{settings.size[0]}&times;{settings.size[1]} px, seed {seed}, "
        f"demo profile <b>{html.escape(settings.name)}</b>. "
        f"All methods are scored on the same test fields ({html.escape(', '.join(test_labels))}), which no "
        "training run saw. <b>mean_image</b>: each stain's pixelwise mean over the training fields. "
        "<b>linear</b>: per-pixel least squares on the 7 brightfield planes and a Gaussian-smoothed (&sigma; = 2 px) "
        "copy of them. Lower is better; the challenge score is (pixelwise + featurewise) / 2.</p>"
        + table
        + '<p><img alt="pixel and feature error per method" '
        + f'src="data:image/png;base64,{_comparison_figure(scores)}"></p>'
        + "<p>The rest of this page is the evaluation report of the trained models.</p>"
    )
    return ReportSection(COMPARISON_HEADING, body)
