"""Per-magnification settings of the challenge's three CellProfiler pipelines, as data.

Every number the measurement pipeline needs lives here and nowhere else: the values are those of
``Adipocyte_pipeline_{20x_ver3,40x_ver2,60x_ver3}.cppipe`` as tabulated in
``docs/cellprofiler-pipeline.md`` §3 and §3.1. Intensities are on CellProfiler's [0, 1] scale (raw counts /
65535). Module numbers in comments refer to the pipeline's module order.

Use :func:`pipeline_settings` to get the frozen :class:`PipelineSettings` of one magnification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vstain.evaluation.threshold import ThresholdSettings
from vstain.vocabulary import check_magnification

Declump = Literal["shape", "intensity"]


@dataclass(frozen=True)
class PrimarySettings:
    """One IdentifyPrimaryObjects module (advanced mode, borders kept, fill holes after both).

    ``maxima_distance`` None means CellProfiler's "automatic" suppression distance.
    """

    diameter: tuple[int, int]
    discard_outside_diameter: bool
    declump: Declump
    smoothing_filter_size: float
    maxima_distance: float | None
    low_res_maxima: bool
    threshold: ThresholdSettings
    fill_holes: bool = True


@dataclass(frozen=True)
class NucleiFilterSettings:
    """FilterObjects (module 11) limits on the primary nuclei; None disables a bound."""

    form_factor: tuple[float | None, float | None] = (0.0, 1.0)
    area: tuple[float | None, float | None] = (50.0, None)
    mean_intensity_hoechst: tuple[float | None, float | None] = (0.0, 0.04)


@dataclass(frozen=True)
class CellSettings:
    """IdentifySecondaryObjects by propagation (module 13) on the lipid + cytoplasm composite.

    The composite (module 12) is ``(lipids_weight * B + cytoplasm_weight * C) / divisor`` clipped
    to [0, 1]: Add at 20x/40x (weights 1, 1, divisor 1), Average(1 B, 3 C) at 60x (divisor 4).
    """

    composite_lipids_weight: float
    composite_cytoplasm_weight: float
    composite_divisor: float
    regularization: float
    fill_holes: bool
    threshold: ThresholdSettings


@dataclass(frozen=True)
class GranularitySettings:
    """MeasureGranularity (module 39) on the raw lipid image."""

    subsample: float = 0.25
    background_subsample: float = 0.25
    radius: int = 10
    steps: int = 16


@dataclass(frozen=True)
class DropletSettings:
    """The lipid-droplet branch (modules 21-31, 35, 40-53)."""

    speckle_feature_size: int  # modules 21, 40: EnhanceOrSuppressFeatures Speckles, Fast
    median_artifact_diameter: float  # module 22
    circular_average_diameter: float  # module 24
    large_droplet_offset: float  # module 26: add this, clip to [0, 1]
    small: PrimarySettings  # module 29 -> lipid_droplets
    big: PrimarySettings  # module 30 -> big_droplets
    defect_speckle_weight: float  # module 42: Average(1 B_rescaled, w S)
    dark_hole_size: tuple[int, int]  # module 44
    defect_lipid_factor: float  # module 46: Multiply(f * B_rescaled, holes)
    shrink_pixels: int  # module 48 (dead: feeds only the dead MaskImage)
    defect_offset: float  # module 50: add this, clip to [0, 1]
    defective_min_integrated_intensity: float  # module 53


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that differs between the 20x, 40x and 60x pipelines."""

    magnification: str
    nuclei: PrimarySettings
    nuclei_filter: NucleiFilterSettings
    cells: CellSettings
    droplets: DropletSettings
    granularity: GranularitySettings


def _nuclei(
    diameter: tuple[int, int], filter_size: float, distance: float, lower: float, window: int
) -> PrimarySettings:
    return PrimarySettings(
        diameter=diameter,
        discard_outside_diameter=True,
        declump="shape",
        smoothing_filter_size=filter_size,
        maxima_distance=distance,
        low_res_maxima=True,
        threshold=ThresholdSettings(
            strategy="adaptive", smoothing_scale=5.0, correction=1.0, lower=lower, upper=1.0, window=window
        ),
    )


def _cells(lipids_weight: float, cytoplasm_weight: float, divisor: float) -> CellSettings:
    return CellSettings(
        composite_lipids_weight=lipids_weight,
        composite_cytoplasm_weight=cytoplasm_weight,
        composite_divisor=divisor,
        regularization=0.1,
        fill_holes=True,
        threshold=ThresholdSettings(
            strategy="adaptive", smoothing_scale=1.34, correction=0.70, lower=0.0, upper=1.0, window=185
        ),
    )


def _droplets(
    small_lower: float, big_diameter: tuple[int, int], defect_offset: float, defective_min: float, shrink: int
) -> DropletSettings:
    small = PrimarySettings(
        diameter=(3, 20),
        discard_outside_diameter=False,
        declump="intensity",
        smoothing_filter_size=3.0,
        maxima_distance=3.0,
        low_res_maxima=True,
        threshold=ThresholdSettings(
            strategy="global", smoothing_scale=3.0, correction=1.0, lower=small_lower, upper=1.0
        ),
    )
    big = PrimarySettings(
        diameter=big_diameter,
        discard_outside_diameter=False,
        declump="intensity",
        smoothing_filter_size=5.0,
        maxima_distance=None,
        low_res_maxima=True,
        threshold=ThresholdSettings(
            strategy="global", smoothing_scale=1.3488, correction=2.0, lower=0.2, upper=1.0
        ),
    )
    return DropletSettings(
        speckle_feature_size=10,
        median_artifact_diameter=2.0,
        circular_average_diameter=10.0,
        large_droplet_offset=-0.4,
        small=small,
        big=big,
        defect_speckle_weight=2.0,
        dark_hole_size=(3, 10),
        defect_lipid_factor=5.0,
        shrink_pixels=shrink,
        defect_offset=defect_offset,
        defective_min_integrated_intensity=defective_min,
    )


#: The three pipelines; values from docs/cellprofiler-pipeline.md §3 and §3.1.
PIPELINES: dict[str, PipelineSettings] = {
    "20x": PipelineSettings(
        magnification="20x",
        nuclei=_nuclei((20, 80), 60.0, 25.0, 0.02, 67),
        nuclei_filter=NucleiFilterSettings(),
        cells=_cells(1.0, 1.0, 1.0),
        droplets=_droplets(0.05, (20, 100), -0.3, 10.0, 1),
        granularity=GranularitySettings(),
    ),
    "40x": PipelineSettings(
        magnification="40x",
        nuclei=_nuclei((30, 150), 60.0, 25.0, 0.01, 67),
        nuclei_filter=NucleiFilterSettings(),
        cells=_cells(1.0, 1.0, 1.0),
        droplets=_droplets(0.2, (30, 150), -0.4, 20.0, 2),
        granularity=GranularitySettings(),
    ),
    "60x": PipelineSettings(
        magnification="60x",
        nuclei=_nuclei((50, 200), 80.0, 35.0, 0.01, 93),
        nuclei_filter=NucleiFilterSettings(),
        cells=_cells(1.0, 3.0, 4.0),
        droplets=_droplets(0.05, (30, 150), -0.5, 20.0, 3),
        granularity=GranularitySettings(),
    ),
}


def pipeline_settings(magnification: str) -> PipelineSettings:
    """The :class:`PipelineSettings` of the challenge pipeline for ``magnification`` (20x/40x/60x)."""
    return PIPELINES[check_magnification(magnification)]
