"""Per-field feature tables: run the measurements on every C01/C02/C03 triplet of a folder.

A :class:`FeatureTable` is what CellProfiler's ``Adipocytes_Image.csv`` is: one row per field,
exactly the 102 columns in CellProfiler's order (``ImageNumber``, ``Metadata_FoV`` such as
``F007``, ``Metadata_Well`` such as ``D02`` and the 99 features), plus per-object tables.
Fields are found by :func:`vstain.plate.index.index_plate` (``require="targets"``: brightfield
is ignored) and keyed like everywhere else by ``(magnification, well, field)``; ``ImageNumber``
follows the sorted file order, as CellProfiler numbers image sets.

The measurement is injected (``measure``, default
:func:`vstain.evaluation.pipeline.measure_field`), so tables can be built with any
implementation with the same contract.
"""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from vstain.atomic import atomic_path
from vstain.errors import PlateError, PlateNotFound
from vstain.evaluation.columns import FEATURE_COLUMNS, IMAGE_COLUMNS
from vstain.evaluation.metric import field_label
from vstain.plate.index import Field, FieldKey, index_plate
from vstain.plate.images import read_image
from vstain.vocabulary import CHANNEL_NAME_TARGETS, TARGET_CHANNEL_NAMES, check_magnification

#: ``measure(nuclei, lipids, cytoplasm, *, magnification) -> FieldMeasurements``
MeasureFunction = Callable[..., Any]


def target_fields(folder: str | os.PathLike[str], *, magnification: str) -> tuple[list[Field], list[str]]:
    """The fields of one magnification in ``folder`` that have all three stains (C01/C02/C03).

    ``folder`` is a flat folder of images, a ``<mag>_images`` folder or a plate root holding
    ``<mag>_images`` folders. Brightfield files are ignored; a field with only some of the three
    stains is left out with a warning.

    Returns
    -------
    fields, warnings
        Fields sorted by (well, field), and one line per field left out.

    Raises
    ------
    PlateError
        If the folder does not exist, holds no complete field, or has a problem the plate index
        reports as an error (two files for one slot, an unreadable or non-uint16 image, ...).
    """
    check_magnification(magnification)
    index = index_plate(folder, magnification=magnification, require="targets")
    index.raise_for_errors()
    fields = index.select(magnification=magnification)
    if not fields:
        raise PlateError(f"{folder}: no C01/C02/C03 image triplets found for {magnification}")
    return fields, [f"{issue.path}: {issue.message}" for issue in index.issues]


def read_stains(field: Field) -> dict[str, np.ndarray]:
    """``{"C01": image, "C02": ..., "C03": ...}`` of a field, as stored (uint16 counts)."""
    return {channel: read_image(field.targets[CHANNEL_NAME_TARGETS[channel]]) for channel in TARGET_CHANNEL_NAMES}


@dataclass
class FeatureTable:
    """Per-field features of one magnification (``Adipocytes_Image.csv`` form) and per-object tables.

    Attributes
    ----------
    frame
        One row per field, the 102 columns of :data:`IMAGE_COLUMNS` in CellProfiler's order.
    objects
        Per-object tables by object name, each with ``ImageNumber``, ``Metadata_Well`` and
        ``Metadata_FoV`` in front.
    labels
        ``{(well, field): {"nuclei": ..., "cells": ..., "lipids": ...}}`` for the fields asked for
        (label images are large, so only a few are kept, for reports).
    warnings
        Messages from the measurements, one per distinct message, prefixed with the fields.
    """

    magnification: str
    frame: pd.DataFrame
    objects: dict[str, pd.DataFrame] = dataclass_field(default_factory=dict)
    labels: dict[FieldKey, dict[str, np.ndarray]] = dataclass_field(default_factory=dict)
    warnings: list[str] = dataclass_field(default_factory=list)

    @classmethod
    def measure(
        cls,
        fields: Sequence[Field],
        *,
        magnification: str,
        workers: int = 1,
        measure: MeasureFunction | None = None,
        keep_labels: Iterable[FieldKey] = (),
    ) -> "FeatureTable":
        """Measure every field (in ``workers`` processes) and assemble the table.

        Parameters
        ----------
        fields
            Fields with all three stains, e.g. from :func:`target_fields`; rows follow their (well, field) order.
        magnification
            ``20x``, ``40x`` or ``60x``: selects the pipeline's settings.
        workers
            Processes to spread fields over; 1 measures in this process.
        measure
            The measurement function; default :func:`vstain.evaluation.pipeline.measure_field`.
            With ``workers > 1`` it must be picklable (a module-level function).
        keep_labels
            Field keys whose label images to keep in :attr:`labels`.
        """
        check_magnification(magnification)
        ordered = sorted(fields, key=lambda f: f.key)
        keep = set(keep_labels)
        processes = min(workers, len(ordered))
        # Each field may use threads of its own (see measure_field); with several worker
        # processes they share the CPUs instead of oversubscribing them.
        threads = None
        if processes > 1:
            from vstain.evaluation.pipeline import usable_cpus

            threads = max(1, usable_cpus() // processes)
        jobs = [(f, magnification, measure, f.key in keep, threads) for f in ordered]
        if processes > 1:
            with ProcessPoolExecutor(max_workers=processes) as pool:
                results = list(pool.map(_measure_job, jobs, chunksize=1))
        else:
            results = [_measure_job(job) for job in jobs]

        rows: list[dict[str, Any]] = []
        objects: dict[str, list[pd.DataFrame]] = {}
        labels: dict[FieldKey, dict[str, np.ndarray]] = {}
        warned: dict[str, list[str]] = {}  # message -> fields: one line per message, not per field
        for number, (images, (features, field_objects, field_labels, field_warnings)) in enumerate(
            zip(ordered, results), start=1
        ):
            identity = {"ImageNumber": number, "Metadata_FoV": f"F{images.field:03d}", "Metadata_Well": images.well}
            label = field_label(images.well, images.field)
            rows.append({**identity, **features})
            for name, table in field_objects.items():
                table = pd.DataFrame(table)
                # an index that carries meaning (e.g. ObjectNumber) becomes a column of the CSV
                table = table.reset_index() if table.index.name is not None else table.copy()
                for position, (column, value) in enumerate(
                    (
                        ("ImageNumber", number),
                        ("Metadata_Well", images.well),
                        ("Metadata_FoV", identity["Metadata_FoV"]),
                    )
                ):
                    if column not in table.columns:
                        table.insert(position, column, value)
                objects.setdefault(name, []).append(table)
            if field_labels:
                labels[images.key] = field_labels
            for message in field_warnings:
                warned.setdefault(message, []).append(label)
        frame = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
        return cls(
            magnification=magnification,
            frame=frame,
            objects={name: pd.concat(parts, ignore_index=True) for name, parts in objects.items()},
            labels=labels,
            warnings=[f"{_field_list(where)}: {message}" for message, where in warned.items()],
        )

    @classmethod
    def read_csv(cls, path: str | os.PathLike[str], *, magnification: str) -> "FeatureTable":
        """Load an image table (vstain's or CellProfiler's ``Adipocytes_Image.csv``).

        Raises
        ------
        PlateError
            If the file is missing or lacks any of the 102 columns.
        """
        path = Path(path)
        if not path.is_file():
            raise PlateNotFound(f"{path}: no such file")
        frame = pd.read_csv(path, dtype={"Metadata_Well": str, "Metadata_FoV": str})
        absent = [c for c in IMAGE_COLUMNS if c not in frame.columns]
        if absent:
            raise PlateError(f"{path}: missing column {absent[0]} ({len(absent)} of the 102 columns missing)")
        return cls(magnification=magnification, frame=frame[list(IMAGE_COLUMNS)])

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the 102-column table atomically; missing values are written ``nan`` as CellProfiler does."""
        target = Path(path)
        with atomic_path(target) as tmp:
            self.frame.to_csv(tmp, index=False, na_rep="nan")
        return target

    def write_objects(self, folder: str | os.PathLike[str], *, prefix: str) -> list[Path]:
        """Write one ``<prefix>_<object>.csv`` per object table into ``folder``; returns the paths."""
        written = []
        for name, table in sorted(self.objects.items()):
            target = Path(folder) / f"{prefix}_{name}.csv"
            with atomic_path(target) as tmp:
                table.to_csv(tmp, index=False, na_rep="nan")
            written.append(target)
        return written


def _field_list(labels: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(labels[:limit])
    return shown if len(labels) <= limit else f"{shown} and {len(labels) - limit} more fields"


def default_measure() -> MeasureFunction:
    """The CellProfiler-equivalent measurement, :func:`vstain.evaluation.pipeline.measure_field`."""
    from vstain.evaluation.pipeline import measure_field

    return measure_field


def _measure_job(job: tuple[Field, str, MeasureFunction | None, bool, int | None]):
    """Measure one field (runs in a worker process): (features, objects, labels, warnings)."""
    images, magnification, measure, keep_labels, threads = job
    measure = measure or default_measure()
    options: dict[str, Any] = {"magnification": magnification}
    # Functions that take ``threads`` (measure_field does) are told this field's share of CPUs.
    if threads is not None and "threads" in inspect.signature(measure).parameters:
        options["threads"] = threads
    pixels = read_stains(images)
    label = field_label(images.well, images.field)
    try:
        result = measure(*(pixels[c] for c in TARGET_CHANNEL_NAMES), **options)
    except PlateError:
        raise
    except Exception as exc:  # keep the field's name with the failure, across processes
        folder = next(iter(images.targets.values())).parent
        raise RuntimeError(f"{label} ({folder}): measurement failed: {exc!r}") from exc
    features = dict(result.features)
    missing = [c for c in FEATURE_COLUMNS if c not in features]
    if missing:
        raise RuntimeError(f"{label}: measurement returned no {missing[0]} ({len(missing)} features missing)")
    features = {c: float(features[c]) for c in FEATURE_COLUMNS}
    objects = {name: pd.DataFrame(table) for name, table in dict(result.objects).items()}
    labels = dict(result.labels) if keep_labels else {}
    return features, objects, labels, list(result.warnings)
