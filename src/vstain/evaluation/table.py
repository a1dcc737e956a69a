"""Per-field feature tables: run the measurements on every C01/C02/C03 triplet of a folder.

A :class:`FeatureTable` is what CellProfiler's ``Adipocytes_Image.csv`` is: one row per field,
exactly the 102 columns in CellProfiler's order (``ImageNumber``, ``Metadata_FoV`` such as
``F007``, ``Metadata_Well`` such as ``D02`` and the 99 features), plus per-object tables.
Fields are found by :func:`vstain.plate.index.index_plate` (``require="targets"``: brightfield
is ignored) and keyed like everywhere else by ``(magnification, well, field)``; ``ImageNumber``
follows the sorted file order, as CellProfiler numbers image sets.

The measurement is injected (``measure``, default
:func:`vstain.evaluation.pipeline.measure_field`), so tables can be built with any
implementation with the same contract. Fields are measured on a Dask cluster
(:mod:`vstain.plate.jobs`: local worker processes, an existing scheduler or a batch cluster);
each field's result can be saved as it ends (:class:`FieldResults`), so an interrupted
evaluation resumes, and the assembled table is the same whatever ran it.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from vstain.atomic import atomic_path, write_text_atomic
from vstain.errors import PlateError, PlateNotFound
from vstain.evaluation.columns import FEATURE_COLUMNS, IMAGE_COLUMNS
from vstain.evaluation.metric import field_label
from vstain.plate.images import read_image
from vstain.plate.index import Field, FieldKey, index_plate
from vstain.vocabulary import CHANNEL_NAME_TARGETS, TARGET_CHANNEL_NAMES, check_magnification

if TYPE_CHECKING:
    from distributed import Client

    from vstain.plate.jobs import ClusterOptions

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
        cluster: "ClusterOptions | Client | None" = None,
        measure: MeasureFunction | None = None,
        keep_labels: Iterable[FieldKey] = (),
        results: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> "FeatureTable":
        """Measure every field on a Dask cluster and assemble the table.

        Parameters
        ----------
        fields
            Fields with all three stains, e.g. from :func:`target_fields`; rows follow their (well, field) order.
        magnification
            ``20x``, ``40x`` or ``60x``: selects the pipeline's settings.
        workers
            Local worker processes when ``cluster`` is None (1: one worker in this process).
        cluster
            Where to run (:class:`~vstain.plate.jobs.ClusterOptions`), or an open ``distributed.Client``
            to share between several tables.
        measure
            The measurement function; default :func:`vstain.evaluation.pipeline.measure_field`.
            With worker processes it must be picklable (a module-level function).
        keep_labels
            Field keys whose label images to keep in :attr:`labels`.
        results
            Folder for one result file per field (:class:`FieldResults`), written as each field
            ends; fields whose saved result matches their images are not measured again, so a
            killed job resumes. None: results are kept in memory only.
        progress
            A progress bar over fields on stderr.
        """
        from vstain.plate.jobs import ClusterOptions, map_fields, open_client

        check_magnification(magnification)
        ordered = sorted(fields, key=lambda f: f.key)
        keep = set(keep_labels)
        measure = measure or default_measure()
        store = FieldResults(results, magnification=magnification, measure=measure) if results else None
        computed: dict[FieldKey, FieldResult] = {}
        todo = []
        for f in ordered:
            saved = store.load(f, labels=f.key in keep) if store is not None else None
            if saved is None:
                todo.append(f)
            else:
                computed[f.key] = saved

        def keep_result(f: Field, result: FieldResult) -> None:
            if store is not None:
                store.save(f, result)
            computed[f.key] = result

        if todo:
            if cluster is not None and not isinstance(cluster, ClusterOptions):
                map_fields(cluster, _measure_job, todo, label=lambda f: f.label, on_result=keep_result,
                           arguments=(magnification, measure, keep), progress=progress, desc="measure")
            else:
                with open_client(cluster or ClusterOptions(workers=workers)) as client:
                    map_fields(client, _measure_job, todo, label=lambda f: f.label, on_result=keep_result,
                               arguments=(magnification, measure, keep), progress=progress, desc="measure")
        return cls._assemble(magnification, ordered, computed)

    @classmethod
    def _assemble(cls, magnification: str, ordered: Sequence[Field], computed: Mapping[FieldKey, "FieldResult"]
                  ) -> "FeatureTable":
        """The table of ``ordered`` fields from their results (rows numbered in that order)."""
        rows: list[dict[str, Any]] = []
        objects: dict[str, list[pd.DataFrame]] = {}
        labels: dict[FieldKey, dict[str, np.ndarray]] = {}
        warned: dict[str, list[str]] = {}  # message -> fields: one line per message, not per field
        for number, images in enumerate(ordered, start=1):
            result = computed[images.key]
            identity = {"ImageNumber": number, "Metadata_FoV": f"F{images.field:03d}", "Metadata_Well": images.well}
            label = field_label(images.well, images.field)
            rows.append({**identity, **result.features})
            for name, table in result.objects.items():
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
            if result.labels:
                labels[images.key] = result.labels
            for message in result.warnings:
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


@dataclass
class FieldResult:
    """What the measurement of one field gives: 99 features, per-object tables, labels, warnings."""

    features: dict[str, float]
    objects: dict[str, pd.DataFrame]
    labels: dict[str, np.ndarray]
    warnings: list[str]


def _measure_job(images: Field, magnification: str, measure: MeasureFunction, keep: set[FieldKey]) -> FieldResult:
    """Measure one field (runs on a Dask worker, with that worker's threads for the field)."""
    from vstain.plate.jobs import field_threads

    options: dict[str, Any] = {"magnification": magnification}
    # Functions that take ``threads`` (measure_field does) are told this field's share of CPUs:
    # the nanny's OMP_NUM_THREADS=1 does not limit the pipeline's own thread pool.
    if "threads" in inspect.signature(measure).parameters:
        options["threads"] = field_threads()
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
    return FieldResult(
        features={c: float(features[c]) for c in FEATURE_COLUMNS},
        objects={name: pd.DataFrame(table) for name, table in dict(result.objects).items()},
        labels=dict(result.labels) if images.key in keep else {},
        warnings=list(result.warnings),
    )


class FieldResults:
    """One file per measured field, so a killed evaluation resumes where it stopped.

    ``<folder>/<well>_F<nnn>.json`` holds the features (exact: JSON floats round-trip), the
    per-object tables column by column with their dtypes, the warnings, and what the result was
    computed from: the images (name, size, modification time), the magnification and the
    measurement function. Label images, kept for a few report fields, go to ``<well>_F<nnn>.npz``.
    A saved result is used only if all of that still matches; every file is written atomically
    (the JSON last, so it never names labels that are not there).
    """

    def __init__(self, folder: str | os.PathLike[str], *, magnification: str, measure: MeasureFunction) -> None:
        self.folder = Path(folder)
        self.magnification = magnification
        self.measure = f"{getattr(measure, '__module__', '?')}.{getattr(measure, '__qualname__', repr(measure))}"

    def path(self, field: Field) -> Path:
        return self.folder / f"{field.well}_F{field.field:03d}.json"

    def _source(self, field: Field) -> dict[str, Any]:
        images = [[str(p.name), (s := p.stat()).st_size, s.st_mtime_ns] for p in field.targets.values()]
        return {"images": images, "magnification": self.magnification, "measure": self.measure}

    def load(self, field: Field, *, labels: bool = False) -> FieldResult | None:
        """The saved result of ``field`` if it matches the field's images now (and has labels if asked)."""
        path = self.path(field)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("source") != self._source(field):
                return None
            saved_labels: dict[str, np.ndarray] = {}
            if labels:
                if not document.get("labels"):
                    return None
                with np.load(path.with_suffix(".npz"), allow_pickle=False) as archive:
                    saved_labels = {name: archive[name] for name in archive.files}
            return FieldResult(
                features={k: float(v) for k, v in document["features"].items()},
                objects={name: _table_from_json(t) for name, t in document["objects"].items()},
                labels=saved_labels,
                warnings=list(document["warnings"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, stale or damaged: measure again

    def save(self, field: Field, result: FieldResult) -> Path:
        path = self.path(field)
        if result.labels:
            with atomic_path(path.with_suffix(".npz")) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **result.labels)
        document = {
            "field": list(field.key),
            "source": self._source(field),
            "features": result.features,
            "objects": {name: _table_to_json(table) for name, table in result.objects.items()},
            "warnings": result.warnings,
            "labels": sorted(result.labels),
        }
        write_text_atomic(path, json.dumps(document) + "\n")
        return path


def _table_to_json(table: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as plain JSON, exactly: values column by column, dtypes, the index's name."""
    named = table.index.name
    frame = table.reset_index() if named is not None else table.reset_index(drop=True)
    return {
        "index": named,
        "columns": [str(c) for c in frame.columns],
        "dtypes": [str(t) for t in frame.dtypes],
        "values": [frame[c].tolist() for c in frame.columns],
    }


def _table_from_json(data: Mapping[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame({
        column: pd.Series(values, dtype=dtype)
        for column, dtype, values in zip(data["columns"], data["dtypes"], data["values"])
    }, columns=data["columns"])
    return frame.set_index(data["index"]) if data.get("index") is not None else frame
