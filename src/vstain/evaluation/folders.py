"""Evaluate a folder of predicted stains against the real ones: tables, scores and the report.

:func:`evaluate_folders` is what ``vstain evaluate`` runs: it finds the fields of both folders
through the plate index (:func:`vstain.evaluation.table.target_fields`), measures them as the
challenge's CellProfiler pipelines do, scores them with the challenge metric and writes, into
``out``, ``features_truth.csv`` and ``features_pred.csv`` (the 102 columns of CellProfiler's
``Adipocytes_Image.csv``), ``objects_{truth,pred}_<object>.csv``, ``scores.json`` and
``report.html``. With several magnifications the CSVs go to ``out/<mag>/``. When the prediction
folder holds intervals (``intervals.csv``, ``lower/``, ``upper/`` from ``vstain predict
--calibration``), their empirical coverage on these fields goes to ``coverage.json`` and the report
(src/vstain/evaluation/coverage.py).

Either folder may be a CV7000 folder or an OME-Zarr HCS plate. Fields are measured on a Dask
cluster (``cluster``: local worker processes, an existing scheduler, a SLURM/PBS cluster); each
field's result is saved under ``out/fields/{truth,pred}/<mag>/`` as soon as it is measured, so a
killed evaluation rerun measures only the fields not saved yet, and gives the same tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vstain.errors import ConfigError, PlateError, PlateNotFound
from vstain.evaluation.coverage import (
    INTERVALS_CSV,
    CoverageResult,
    feature_coverage,
    pixel_coverage,
    read_intervals,
    write_coverage,
)
from vstain.evaluation.metric import ChallengeScore, PixelErrorAccumulator, featurewise_score, field_label, write_scores
from vstain.evaluation.report import FieldPanel, SectionHook, coverage_section, write_report
from vstain.evaluation.table import FeatureTable, MeasureFunction, read_stains, target_fields
from vstain.plate.index import Field, FieldKey, image_folders, index_plate
from vstain.plate.jobs import ClusterOptions, open_client
from vstain.vocabulary import CHANNEL_NAME_TARGETS, TARGETS

__all__ = ["evaluate_folders"]


def evaluate_folders(
    truth: str | os.PathLike[str],
    pred: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    magnification: str | None = None,
    workers: int = 1,
    report_fields: int = 3,
    measure: MeasureFunction | None = None,
    report_sections: SectionHook | None = None,
    cluster: ClusterOptions | None = None,
    progress: bool = False,
    announce: Callable[[str], None] | None = None,
) -> list[ChallengeScore]:
    """Measure, score and report ``pred`` against ``truth``; returns one score per magnification.

    Parameters
    ----------
    truth, pred
        Flat folders of C01/C02/C03 images (give ``magnification``), plates with
        ``<mag>_images`` folders or OME-Zarr HCS plates; fields are matched by
        (magnification, well, field).
    out
        Output folder (created).
    magnification
        Required for flat folders; default: every ``<mag>_images`` folder of ``truth``.
    workers
        Local worker processes measuring fields (at least 1), when ``cluster`` is not given.
    report_fields
        Fields shown as image panels in ``report.html`` (0 or more).
    measure
        The measurement function; default :func:`vstain.evaluation.pipeline.measure_field`.
    report_sections
        Called with the scores; the sections it returns open ``report.html``.
    cluster
        Where fields are measured (:class:`~vstain.plate.jobs.ClusterOptions`); default
        ``workers`` local processes.
    progress
        Progress bars over fields on stderr.
    announce
        Receives one line naming the cluster (and its dashboard address).

    Raises
    ------
    PlateError
        If a folder is missing or unusable, or a prediction's size differs from its target's.
    ConfigError
        If ``workers`` or ``report_fields`` is out of range.
    """
    if workers < 1:
        raise ConfigError(f"`workers` must be at least 1, got {workers}")
    if report_fields < 0:
        raise ConfigError(f"`report_fields` must be 0 or more, got {report_fields}")
    truth, pred, out = Path(truth), Path(pred), Path(out)
    for role, folder in (("truth", truth), ("pred", pred)):
        if not folder.is_dir():
            raise PlateNotFound(f"{folder}: no such folder (`{role}`)")
    if out.exists() and not out.is_dir():
        raise PlateError(f"{out}: exists and is not a folder (`out`)")
    magnifications = _magnifications(truth, magnification)
    scores: list[ChallengeScore] = []
    panels: dict[str, list[FieldPanel]] = {}
    coverage: list[CoverageResult] = []
    with open_client(cluster or ClusterOptions(workers=workers), announce=announce) as client:
        for mag in magnifications:
            _evaluate_magnification(truth, pred, out, mag, len(magnifications) > 1, client, report_fields,
                                    measure, progress, scores, panels, coverage)

    write_scores(out / "scores.json", scores)
    sections = list(report_sections(scores)) if report_sections is not None else []
    if coverage:
        write_coverage(out / "coverage.json", coverage)
        sections.append(coverage_section(coverage))
    write_report(
        out / "report.html",
        scores,
        panels=panels,
        sources={"truth": str(truth), "prediction": str(pred)},
        sections=sections,
    )
    return scores


def _magnifications(truth: Path, magnification: str | None) -> list[str]:
    """The magnifications to evaluate: ``magnification``, or every one ``truth`` holds."""
    from vstain.plate.omezarr import is_hcs_plate

    if magnification is not None or not is_hcs_plate(truth):
        return [m for m, _ in image_folders(truth, magnification)]
    index = index_plate(truth, require="targets", check_headers=False)
    if not index.fields:
        index.raise_for_errors()
        raise PlateError(f"{truth}: no field with C01/C02/C03 found (`truth`)")
    return index.magnifications


def _evaluate_magnification(truth: Path, pred: Path, out: Path, mag: str, nested: bool, client: Any,
                            report_fields: int, measure: MeasureFunction | None, progress: bool,
                            scores: list[ChallengeScore], panels: dict[str, list[FieldPanel]],
                            coverage: list[CoverageResult]) -> None:
    """Measure, score and write the tables of one magnification (appends to ``scores`` and ``panels``)."""
    mag_out = out / mag if nested else out
    truth_fields, truth_notes = target_fields(truth, magnification=mag)
    pred_fields, pred_notes = target_fields(pred, magnification=mag)
    pred_by_key = {f.key: f for f in pred_fields}
    matched = [f for f in truth_fields if f.key in pred_by_key]
    shown = [f.key for f in matched[:report_fields]]
    _check_sizes(matched, pred_by_key)  # before the slow part

    truth_table = FeatureTable.measure(
        truth_fields, magnification=mag, cluster=client, measure=measure, keep_labels=shown,
        results=out / "fields" / "truth" / mag, progress=progress,
    )
    pred_table = FeatureTable.measure(
        pred_fields, magnification=mag, cluster=client, measure=measure, keep_labels=shown,
        results=out / "fields" / "pred" / mag, progress=progress,
    )

    intervals_file = pred / INTERVALS_CSV
    interval_fields = []
    pixels = PixelErrorAccumulator()
    for field in matched:
        target, guess = read_stains(field), read_stains(pred_by_key[field.key])
        label = field_label(field.well, field.field)
        pixels.add(target, guess, label=label)
        predicted = pred_by_key[field.key]
        if intervals_file.is_file() and isinstance(predicted.targets[TARGETS[0]], Path):
            interval_fields.append(({CHANNEL_NAME_TARGETS[c]: image for c, image in target.items()},
                                    predicted.targets[TARGETS[0]].parent,
                                    [predicted.targets[t].name for t in TARGETS]))
        if field.key in shown:
            panels.setdefault(mag, []).append(
                FieldPanel(
                    label=f"{mag} {label}",
                    truth=target,
                    pred=guess,
                    truth_labels=truth_table.labels.get(field.key, {}),
                    pred_labels=pred_table.labels.get(field.key, {}),
                )
            )

    warnings = (
        [f"truth: {w}" for w in truth_notes + truth_table.warnings]
        + [f"prediction: {w}" for w in pred_notes + pred_table.warnings]
    )
    scores.append(
        ChallengeScore(
            magnification=mag,
            pixelwise=pixels.result(),
            featurewise=featurewise_score(truth_table.frame, pred_table.frame),
            warnings=tuple(warnings),
        )
    )
    if intervals_file.is_file():
        coverage.append(pixel_coverage(
            feature_coverage(read_intervals(intervals_file), truth_table.frame, magnification=mag,
                             alpha=_interval_alpha(pred)), interval_fields))
    truth_table.write_csv(mag_out / "features_truth.csv")
    pred_table.write_csv(mag_out / "features_pred.csv")
    truth_table.write_objects(mag_out, prefix="objects_truth")
    pred_table.write_objects(mag_out, prefix="objects_pred")


def _interval_alpha(pred: Path) -> float | None:
    """The level the intervals were calibrated for (``intervals.json``), if it says."""
    import json

    try:
        return float(json.loads((pred / "intervals.json").read_text("utf-8"))["alpha"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_sizes(matched: Sequence[Field], pred_by_key: Mapping[FieldKey, Field]) -> None:
    """Refuse a prediction whose image size differs from its target's, naming the file.

    The plate index has checked already that every image is uint16 and that the images of one
    folder share a size; what is left is the size of one folder against the other.
    """
    for field in matched:
        predicted = pred_by_key[field.key]
        if field.shape is not None and predicted.shape is not None and field.shape != predicted.shape:
            path = next(iter(predicted.targets.values()))
            raise PlateError(
                f"{path}: size {'x'.join(map(str, predicted.shape))} differs from the "
                f"target's {'x'.join(map(str, field.shape))}"
            )
