"""Evaluation benchmark: the CellProfiler-equivalent measurements of one synthetic field.

The field comes from ``vstain synth``'s generator (:func:`vstain.synth.field.render_field`), so
the measurements see realistic nuclei, cells and droplets. Lives here, on top of both
``vstain.synth`` and ``vstain.evaluation``, so that neither imports the other.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from vstain.vocabulary import FIELD_SHAPE, TARGET_CHANNELS, check_magnification

__all__ = ["bench_evaluation", "benchmark_measure_field", "synthetic_field"]

#: ``measure(nuclei, lipids, cytoplasm, *, magnification[, threads]) -> FieldMeasurements``
MeasureFunction = Callable[..., Any]


def synthetic_field(
    shape: tuple[int, int] = FIELD_SHAPE["20x"],
    *,
    magnification: str = "20x",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One field of ``vstain synth`` as ``{"C01", "C02", "C03"}`` uint16 raw counts.

    Parameters
    ----------
    shape
        Field size ``(H, W)`` in pixels.
    magnification
        Magnification of the synthetic optics and specimen scale.
    seed
        Seed of the generator; same arguments, same arrays.

    Returns
    -------
    dict
        Channel name (``"C01"``, ``"C02"``, ``"C03"``) to a uint16 ``(H, W)`` image.
    """
    from vstain.synth.field import render_field

    check_magnification(magnification)
    rendered = render_field(magnification=magnification, seed=seed, size=tuple(shape))
    return {f"C{TARGET_CHANNELS[target]:02d}": np.asarray(image, np.uint16)
            for target, image in rendered.targets.items()}


def benchmark_measure_field(
    shape: tuple[int, int] = FIELD_SHAPE["20x"],
    magnification: str = "20x",
    repeats: int = 1,
    *,
    field: Mapping[str, np.ndarray] | None = None,
    measure: MeasureFunction | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time the per-field measurements.

    Parameters
    ----------
    shape
        Size of the synthesised field (ignored when ``field`` is given).
    magnification
        Pipeline settings to use.
    repeats
        Timed runs (no warm-up run: the first run is what a user waits for).
    field
        ``{"C01", "C02", "C03"}`` uint16 images to measure instead of a synthetic field.
    measure
        Measurement function; default :func:`vstain.evaluation.pipeline.measure_field`.
    seed
        Seed of the synthetic field.
    threads
        Passed to ``measure`` (``None``: its default).

    Returns
    -------
    dict
        ``magnification``, ``shape``, ``repeats``, ``threads``, ``seconds`` (wall, each run),
        ``cpu_seconds`` (this process's CPU time, each run), ``seconds_per_field`` (mean wall),
        ``seconds_min`` and ``objects`` (object counts of the last run, by table).
    """
    from vstain.evaluation.table import default_measure

    measure = measure or default_measure()
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    images = dict(field) if field is not None else synthetic_field(shape, magnification=magnification, seed=seed)
    options: dict[str, Any] = {"magnification": magnification}
    if threads is not None:
        options["threads"] = threads
    seconds, cpu_seconds = [], []
    result = None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = measure(images["C01"], images["C02"], images["C03"], **options)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "magnification": magnification,
        "shape": tuple(int(s) for s in images["C01"].shape),
        "repeats": repeats,
        "threads": threads,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "seconds_per_field": float(np.mean(seconds)),
        "seconds_min": float(np.min(seconds)),
        "objects": {name: int(len(table)) for name, table in dict(result.objects).items()},
    }


def bench_evaluation(
    field: tuple[int, int], *, magnification: str = "20x", log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Time ``measure_field`` on one ``vstain synth`` field: one thread, then the default threads.

    Parameters
    ----------
    field
        Field size ``(H, W)``.
    magnification
        Magnification of the field and of the pipeline settings.
    log
        Receives one line per measurement.

    Returns
    -------
    list of dict
        One row per thread count: ``field``, ``magnification``, ``threads``, ``seconds`` (wall),
        ``cpu_seconds`` and ``objects`` (object counts by table).
    """
    from vstain.evaluation.pipeline import default_threads

    images = synthetic_field(tuple(field), magnification=magnification, seed=0)
    rows = []
    for threads in sorted({1, default_threads()}):
        timing = benchmark_measure_field(magnification=magnification, field=images, threads=threads)
        rows.append({
            "field": f"{field[0]}x{field[1]}",
            "magnification": magnification,
            "threads": threads,
            "seconds": timing["seconds"][0],
            "cpu_seconds": timing["cpu_seconds"][0],
            "objects": timing["objects"],
        })
        log(f"  evaluation {rows[-1]['field']} {magnification} threads={threads}: "
            f"{rows[-1]['seconds']:.1f} s wall, {rows[-1]['cpu_seconds']:.1f} s CPU")
    return rows
