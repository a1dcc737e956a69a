"""The lipid-droplet branch of the challenge pipelines (docs/cellprofiler-pipeline.md §3 modules 6, 21-53; §5).

API for the field pipeline::

    branch = measure_lipid_branch(bodipy, magnification="20x")   # bodipy: float, raw / 65535
    branch.labels             # Lipids_no_edge, int32 label image numbered 1..N
    branch.count              # Count_Lipids_no_edge (= N)
    branch.defect_image       # Defect_image_rescaled (float64, 0-1)
    branch.defective_count    # Count_Defective_lipid_droplets
    branch.granularity        # {"Granularity_1_Bodipy": ..., ..., "Granularity_16_Bodipy": ...}
    branch.warnings           # notes for scores.json (e.g. a blank image that cannot be stretched)

:func:`measure_droplet_branch` is the same with explicit settings, in the form
:func:`vstain.evaluation.pipeline.measure_field` calls it. Shape and intensity measurements of
``labels`` (on Bodipy and on ``defect_image``) are left to :mod:`vstain.evaluation.measure`.

The modules, in pipeline order (settings from :mod:`vstain.evaluation.settings`):

* segmentation image: ``Bodipy_rescaled`` = stretch(B) [6]; small droplets = stretch(median(
  speckles(B))) [21-23]; large droplets = stretch(pillbox(B)) - 0.4, clipped [24-26];
  their average [27], stretched [28];
* ``lipid_droplets`` = IdentifyPrimaryObjects on [28] [29]; ``big_droplets`` on [26] [30];
  merged [31]; objects touching the border removed → ``Lipids_no_edge`` [35];
* defect image: speckles of Bodipy_rescaled, stretched [40-41]; Average(1 B_r, 2 S) stretched
  [42-43]; dark holes stretched [44-45]; Multiply(5 B_r, holes) stretched [46-47]; plus the
  (negative) offset, clipped, stretched → ``Defect_image_rescaled`` [50-51] (the shrink/mask
  modules 48-49 are dead in the original pipeline: their output is never used);
* ``Defective_lipid_droplets``: Lipids_no_edge objects whose integrated defect intensity is at
  least the magnification's limit [52-53];
* ``Granularity_1..16_Bodipy`` on the raw Bodipy image [39].

Fidelity: everything runs in float32 like CellProfiler's readers deliver. The one step that
cannot be matched bit for bit across CellProfiler builds is the 255-level quantisation of the
median filter [22]: which equally populated grey levels merge depends on ``numpy.argsort``'s
order among ties, which differs between NumPy releases and CPUs. vstain uses NumPy < 1.25's
order (CellProfiler 4.0.5's; :func:`vstain.evaluation.image_ops.classic_argsort`) on every
machine. With CellProfiler 5's own median injected, this branch reproduces CellProfiler 5's
lipid features to a featurewise score of 8e-5 on the 20x fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi

from vstain.evaluation.granularity import Semantics, measure_granularity
from vstain.evaluation.image_ops import (
    circular_average_smooth,
    enhance_dark_holes,
    enhance_speckles,
    image_math,
    median_smooth,
    merge_objects,
    stretch,
)
from vstain.evaluation.objects import identify_primary_objects, remove_border_objects
from vstain.evaluation.settings import DropletSettings, PipelineSettings, pipeline_settings


@dataclass
class LipidBranch:
    """Outputs of :func:`measure_lipid_branch` (see the module docstring)."""

    labels: np.ndarray
    defect_image: np.ndarray
    defect_integrated_intensity: np.ndarray
    defective_count: int
    granularity: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Count_Lipids_no_edge."""
        return int(self.labels.max(initial=0))


def _stretch_noting(image: np.ndarray, name: str, warnings: list[str]) -> np.ndarray:
    if image.size and image.min() == image.max():
        warnings.append(f"RescaleIntensity {name}: constant image ({float(image.min()):g}) cannot be stretched")
    return stretch(image)


def segmentation_images(
    bodipy: np.ndarray, settings: DropletSettings, warnings: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modules 6 and 21-28: ``(Bodipy_rescaled, Droplet_segmentation_image_rescaled,
    Large_droplets_smoothed_rescaled_thresholded)``.
    """
    notes: list[str] = [] if warnings is None else warnings
    bodipy_rescaled = _stretch_noting(bodipy, "Bodipy_rescaled", notes)
    small = enhance_speckles(bodipy, feature_size=settings.speckle_feature_size)
    small = median_smooth(small, diameter=settings.median_artifact_diameter)
    small = _stretch_noting(small, "Enhance_small_droplet_smoothed_rescaled", notes)
    large = circular_average_smooth(bodipy, diameter=settings.circular_average_diameter)
    large = _stretch_noting(large, "Large_droplets_smoothed_rescaled", notes)
    large = image_math([large], operation="none", add=settings.large_droplet_offset)
    combined = image_math([bodipy_rescaled, small, large], operation="average")
    combined = _stretch_noting(combined, "Droplet_segmentation_image_rescaled", notes)
    return bodipy_rescaled, combined, large


def defect_image(
    bodipy_rescaled: np.ndarray, settings: DropletSettings, warnings: list[str] | None = None, *, threads: int = 1
) -> np.ndarray:
    """Modules 40-47 and 50-51: ``Defect_image_rescaled`` from ``Bodipy_rescaled``.

    ``threads`` > 1 runs the dark-hole reconstructions concurrently (same result).
    """
    notes: list[str] = [] if warnings is None else warnings
    speckles = enhance_speckles(bodipy_rescaled, feature_size=settings.speckle_feature_size)
    speckles = _stretch_noting(speckles, "Enhance_speckles_rescale", notes)
    step1 = image_math(
        [bodipy_rescaled, speckles], operation="average", factors=(1.0, settings.defect_speckle_weight)
    )
    step1 = _stretch_noting(step1, "Enhance_holes_step1_rescaled", notes)
    holes = enhance_dark_holes(step1, hole_size=settings.dark_hole_size, threads=threads)
    holes = _stretch_noting(holes, "Enhance_holes_step2_rescaled", notes)
    defects = image_math(
        [bodipy_rescaled, holes], operation="multiply", factors=(settings.defect_lipid_factor, 1.0)
    )
    defects = _stretch_noting(defects, "Droplet_defects_rescaled", notes)
    defects = image_math([defects], operation="none", add=settings.defect_offset)
    return _stretch_noting(defects, "Defect_image_rescaled", notes)


def measure_lipid_branch(
    bodipy: np.ndarray, *, magnification: str, semantics: Semantics = "cp4"
) -> LipidBranch:
    """Run the lipid branch on one field's Bodipy (C02) image.

    Parameters
    ----------
    bodipy : (H, W) float array, raw counts / 65535 (CellProfiler's scale); computed in float32
        like CellProfiler.
    magnification : "20x", "40x" or "60x"; selects the pipeline's settings.
    semantics : "cp4" (CellProfiler 4.0.5, the challenge) or "cp5" (CellProfiler 5); affects
        thresholds and granularity only.

    Returns
    -------
    LipidBranch
    """
    return _lipid_branch(bodipy, pipeline_settings(magnification), semantics)


@dataclass
class DropletBranch:
    """The lipid branch as :func:`vstain.evaluation.pipeline.measure_field` consumes it.

    Same content as :class:`LipidBranch`; ``granularity`` is keyed by scale 1..16.
    """

    lipid_labels: np.ndarray
    defect_image: np.ndarray
    defective_count: int
    granularity: dict[int, float]


def measure_droplet_branch(
    bodipy: np.ndarray,
    *,
    settings: PipelineSettings,
    semantics: Semantics = "cp4",
    warnings: list[str] | None = None,
    threads: int = 1,
) -> DropletBranch:
    """:func:`measure_lipid_branch` with explicit ``settings``; appends its notes to ``warnings``.

    ``threads > 1`` runs the dark-hole reconstructions concurrently (same result).
    """
    branch = _lipid_branch(bodipy, settings, semantics, threads)
    if warnings is not None:
        warnings.extend(branch.warnings)
    return DropletBranch(
        lipid_labels=branch.labels,
        defect_image=branch.defect_image,
        defective_count=branch.defective_count,
        granularity={
            i: branch.granularity[f"Granularity_{i}_Bodipy"] for i in range(1, settings.granularity.steps + 1)
        },
    )


def _lipid_branch(
    bodipy: np.ndarray, settings: PipelineSettings, semantics: Semantics, threads: int = 1
) -> LipidBranch:
    droplet_settings = settings.droplets
    warnings: list[str] = []
    # Both CellProfiler 4.0.5 (Bio-Formats) and 5 (imageio) hand modules float32 pixels; the
    # 255-level median depends on the exact float32 values.
    bodipy = np.asarray(bodipy, dtype=np.float32)
    if bodipy.ndim != 2:
        raise ValueError(f"measure_lipid_branch needs a 2-D image, got shape {bodipy.shape}")

    bodipy_rescaled, segmentation, large = segmentation_images(bodipy, droplet_settings, warnings)
    small_droplets = identify_primary_objects(
        segmentation,
        settings=droplet_settings.small,
        semantics=semantics,
        warnings=warnings,
        module="IdentifyPrimaryObjects lipid_droplets",
    )
    big_droplets = identify_primary_objects(
        large,
        settings=droplet_settings.big,
        semantics=semantics,
        warnings=warnings,
        module="IdentifyPrimaryObjects big_droplets",
    )
    merged = merge_objects(big_droplets.labels, small_droplets.labels)
    (labels,) = remove_border_objects(merged)
    labels = labels.astype(np.int32)

    defects = defect_image(bodipy_rescaled, droplet_settings, warnings, threads=threads)
    count = int(labels.max(initial=0))
    integrated = np.asarray(ndi.sum_labels(defects, labels, index=np.arange(1, count + 1)), dtype=np.float64)
    defective = int(np.count_nonzero(~(integrated < droplet_settings.defective_min_integrated_intensity)))

    g = settings.granularity
    granularity = measure_granularity(
        bodipy,
        image_name="Bodipy",
        subsample=g.subsample,
        background_subsample=g.background_subsample,
        radius=g.radius,
        steps=g.steps,
        semantics=semantics,
    )
    return LipidBranch(
        labels=labels,
        defect_image=defects,
        defect_integrated_intensity=integrated,
        defective_count=defective,
        granularity=granularity,
        warnings=warnings,
    )
