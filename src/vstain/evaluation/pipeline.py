"""The challenge's CellProfiler pipeline on one field: the 99 features of ``Adipocytes_Image.csv``.

:func:`measure_field` runs the CSV-relevant modules of ``Adipocyte_pipeline_<mag>.cppipe``
(docs/cellprofiler-pipeline.md §3 and §5) on one C01/C02/C03 triplet:

* nuclei (module 8) on raw Hoechst → MeasureObjectSizeShape/Intensity (9, 10) → FilterObjects
  limits (11) = ``Nuclei_filtered``;
* composite (12) → cells by propagation (13) → border filter (14) = ``cells_no_edge`` with
  ``nuclei_no_edge`` renumbered alike → measurements (19, 20);
* the lipid branch, granularity and defects (21-53) from
  :func:`vstain.evaluation.droplets.measure_droplet_branch`.

Inputs are uint16 raw counts; they become CellProfiler's 0-1 scale as float32 (CP 4.0.5 reads
through Bio-Formats) or float64 with ``semantics="cp5"``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.evaluation.droplets import DropletBranch, measure_droplet_branch
from vstain.evaluation.lazy_state import build_lazy_state
from vstain.evaluation.measure import aggregate, intensity, measure_objects, size_shape
from vstain.evaluation.objects import PrimaryObjects, filter_by_limits, identify_primary_objects, remove_border_objects
from vstain.evaluation.secondary import propagate_cells
from vstain.evaluation.settings import CellSettings, PipelineSettings, pipeline_settings
from vstain.evaluation.threshold import Semantics
from vstain.plate.jobs import usable_cpus

#: Object sets whose aggregates are exported, and the images measured in each (CP names).
EXPORTED_INTENSITIES: dict[str, tuple[str, ...]] = {
    "nuclei_no_edge": ("Bodipy", "CellTrackerRed", "Hoechst"),
    "cells_no_edge": ("Bodipy", "CellTrackerRed"),
    "Lipids_no_edge": ("Bodipy", "Defect_image_rescaled"),
}


@dataclass
class FieldMeasurements:
    """Everything :func:`measure_field` learned about one field.

    features : the 99 feature columns of ``Adipocytes_Image.csv`` in CellProfiler's order.
    objects : per-object tables of ``nuclei_no_edge``, ``cells_no_edge``, ``Lipids_no_edge``.
    labels : final label images ``nuclei`` (module 8), ``nuclei_filtered``, ``nuclei_no_edge``,
        ``cells`` (cells_no_edge) and ``lipids`` (Lipids_no_edge).
    warnings : deviations from what CellProfiler would do (e.g. a clamped adaptive window).
    """

    features: dict[str, float]
    objects: dict[str, pd.DataFrame] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def default_threads() -> int:
    """Threads :func:`measure_field` uses by default: 2 if this process may use 2 CPUs, else 1.

    One field has two independent branches (nuclei/cells and lipids), so more than 2 threads
    gain little; spread fields over processes for more (``vstain evaluate --workers``).
    """
    return 2 if usable_cpus() >= 2 else 1


def to_cellprofiler_scale(image: np.ndarray, *, semantics: Semantics = "cp4") -> np.ndarray:
    """uint16 raw counts → CellProfiler's [0, 1] float scale (float32 for cp4, float64 for cp5)."""
    dtype = np.float32 if semantics == "cp4" else np.float64
    if image.dtype == np.uint16:
        return image.astype(dtype) / dtype(65535)
    return np.asarray(image, dtype=dtype)


def composite_image(lipids: np.ndarray, cytoplasm: np.ndarray, settings: CellSettings) -> np.ndarray:
    """ImageMath module 12: ``(wB·B + wC·C) / divisor`` clipped to [0, 1]."""
    out = (
        lipids * lipids.dtype.type(settings.composite_lipids_weight)
        + cytoplasm * cytoplasm.dtype.type(settings.composite_cytoplasm_weight)
    )
    if settings.composite_divisor != 1:
        out = out / out.dtype.type(settings.composite_divisor)
    return np.clip(out, 0, 1)


def filter_nuclei(nuclei: PrimaryObjects, hoechst: np.ndarray, settings: PipelineSettings) -> np.ndarray:
    """Modules 9-11: keep nuclei whose form factor, area and mean Hoechst are within the limits."""
    shape = size_shape(nuclei.labels)
    mean_hoechst = intensity(nuclei.labels, hoechst, "Hoechst")["Intensity_MeanIntensity_Hoechst"]
    limits = settings.nuclei_filter
    (kept,) = filter_by_limits(
        nuclei.labels,
        [
            (shape["AreaShape_FormFactor"].to_numpy(), *limits.form_factor),
            (shape["AreaShape_Area"].to_numpy(), *limits.area),
            (mean_hoechst.to_numpy(), *limits.mean_intensity_hoechst),
        ],
    )
    return kept


def measure_field(
    nuclei: np.ndarray,
    lipids: np.ndarray,
    cytoplasm: np.ndarray,
    *,
    magnification: str,
    semantics: Semantics = "cp4",
    threads: int | None = None,
) -> FieldMeasurements:
    """The 99 challenge features of one field (``Adipocytes_Image.csv`` minus the metadata).

    Parameters
    ----------
    nuclei, lipids, cytoplasm : (H, W) uint16 raw-count images (C01, C02, C03).
    magnification : ``"20x"``, ``"40x"`` or ``"60x"``: picks the pipeline's settings.
    semantics : ``"cp4"`` (CellProfiler 4.0.5, the challenge's release) or ``"cp5"``.
    threads : threads for one field (default :func:`default_threads`). With 2 or more the lipid
        branch runs beside the nuclei/cell branch and the dark-hole reconstructions run
        concurrently; the heavy steps are compiled code that releases the GIL. The results do
        not depend on it.
    """
    settings = pipeline_settings(magnification)
    if not (nuclei.shape == lipids.shape == cytoplasm.shape) or nuclei.ndim != 2:
        raise ValueError(
            f"C01/C02/C03 must be 2-D images of one shape, got {nuclei.shape}, {lipids.shape}, {cytoplasm.shape}"
        )
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    warnings: list[str] = []
    hoechst = to_cellprofiler_scale(nuclei, semantics=semantics)
    bodipy = to_cellprofiler_scale(lipids, semantics=semantics)
    ctr = to_cellprofiler_scale(cytoplasm, semantics=semantics)

    lipid_warnings: list[str] = []
    if threads > 1:
        build_lazy_state()  # both branches read centrosome's lazily built tables
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vstain-lipids") as pool:
            lipid_job = pool.submit(_lipids, bodipy, settings, semantics, lipid_warnings, threads)
            features, objects, labels = _nuclei_and_cells(hoechst, bodipy, ctr, settings, semantics, warnings)
            droplets, objects["Lipids_no_edge"] = lipid_job.result()
    else:
        features, objects, labels = _nuclei_and_cells(hoechst, bodipy, ctr, settings, semantics, warnings)
        droplets, objects["Lipids_no_edge"] = _lipids(bodipy, settings, semantics, lipid_warnings, 1)
    warnings.extend(lipid_warnings)  # after the nuclei's notes, in pipeline order
    features["Count_Lipids_no_edge"] = float(droplets.lipid_labels.max(initial=0))
    features["Count_Defective_lipid_droplets"] = float(droplets.defective_count)
    features.update({f"Granularity_{k}_Bodipy": float(v) for k, v in droplets.granularity.items()})
    labels["lipids"] = droplets.lipid_labels

    for name, table in objects.items():
        exported = [c for c in table.columns if not (name == "cells_no_edge" and c.endswith("_Hoechst"))]
        features.update(aggregate(table[exported], name))
    ordered = {column: float(features.get(column, np.nan)) for column in FEATURE_COLUMNS}
    return FieldMeasurements(features=ordered, objects=objects, labels=labels, warnings=warnings)


def _lipids(
    bodipy: np.ndarray, settings: PipelineSettings, semantics: Semantics, warnings: list[str], threads: int
) -> tuple[DropletBranch, pd.DataFrame]:
    """Modules 21-53 and the droplets' measurements -> (DropletBranch, Lipids_no_edge table)."""
    droplets = measure_droplet_branch(
        bodipy, settings=settings, semantics=semantics, warnings=warnings, threads=threads
    )
    table = measure_objects(
        droplets.lipid_labels, {"Bodipy": bodipy, "Defect_image_rescaled": droplets.defect_image}
    )
    return droplets, table


def _nuclei_and_cells(
    hoechst: np.ndarray,
    bodipy: np.ndarray,
    ctr: np.ndarray,
    settings: PipelineSettings,
    semantics: Semantics,
    warnings: list[str],
) -> tuple[dict[str, float], dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Modules 8-20: nuclei, cells and their measurements -> (features, objects, labels)."""
    primary = identify_primary_objects(
        hoechst,
        settings=settings.nuclei,
        semantics=semantics,
        warnings=warnings,
        module="IdentifyPrimaryObjects(nuclei)",
    )
    nuclei_filtered = filter_nuclei(primary, hoechst, settings)
    composite = composite_image(bodipy, ctr, settings.cells)
    cells = propagate_cells(
        composite,
        nuclei_filtered,
        primary.unedited_labels,
        settings=settings.cells,
        semantics=semantics,
        warnings=warnings,
        module="IdentifySecondaryObjects(cell_bodies)",
    )
    cells_no_edge, nuclei_no_edge = remove_border_objects(cells.labels, nuclei_filtered)
    n_cells = int(cells_no_edge.max(initial=0))

    images = {"Bodipy": bodipy, "CellTrackerRed": ctr, "Hoechst": hoechst}
    objects = {
        "nuclei_no_edge": measure_objects(
            nuclei_no_edge, {k: images[k] for k in EXPORTED_INTENSITIES["nuclei_no_edge"]}
        ),
        "cells_no_edge": measure_objects(cells_no_edge, {k: images[k] for k in EXPORTED_INTENSITIES["cells_no_edge"]}),
    }
    # FilterObjects gives the additional objects the primary's count, objects or not.
    objects["nuclei_no_edge"] = objects["nuclei_no_edge"].reindex(pd.RangeIndex(1, n_cells + 1, name="ObjectNumber"))
    features: dict[str, float] = {
        "Count_nuclei": float(primary.count),
        "Count_cells_no_edge": float(n_cells),
        "Count_nuclei_no_edge": float(n_cells),
    }
    labels = {
        "nuclei": primary.labels,
        "nuclei_filtered": nuclei_filtered,
        "nuclei_no_edge": nuclei_no_edge,
        "cells": cells_no_edge,
    }

    return features, objects, labels
