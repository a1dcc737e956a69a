"""Nuclei segmentation as the challenge's CellProfiler pipelines do it, for training masks.

The reference solution used CellProfiler's nucleus labels as privileged information;
:func:`segment_nuclei` gives the same labels (IdentifyPrimaryObjects module 8 and, optionally,
the FilterObjects limits of module 11) from a raw C01 image without running the whole pipeline.
"""

from __future__ import annotations

import numpy as np

from vstain.evaluation.objects import identify_primary_objects
from vstain.evaluation.pipeline import filter_nuclei, to_cellprofiler_scale
from vstain.evaluation.settings import pipeline_settings
from vstain.evaluation.threshold import Semantics


def segment_nuclei(
    c01: np.ndarray,
    *,
    magnification: str,
    filtered: bool = False,
    semantics: Semantics = "cp4",
    warnings: list[str] | None = None,
) -> np.ndarray:
    """Label image (int32, 0 = background, nuclei 1..N) of a raw C01 image.

    Parameters
    ----------
    c01 : (H, W) uint16 raw-count nuclei image.
    magnification : ``"20x"``, ``"40x"`` or ``"60x"``.
    filtered : False gives module 8's ``nuclei`` (what ``Count_nuclei`` counts); True applies
        module 11's limits (form factor, area >= 50, mean Hoechst <= 0.04) = ``Nuclei_filtered``.
    semantics : ``"cp4"`` (CellProfiler 4.0.5) or ``"cp5"``.
    warnings : collects a note if the adaptive window had to be clamped (fields < 134 px at 20x).
    """
    if c01.ndim != 2:
        raise ValueError(f"segment_nuclei needs one (H, W) image, got shape {c01.shape}")
    settings = pipeline_settings(magnification)
    hoechst = to_cellprofiler_scale(c01, semantics=semantics)
    primary = identify_primary_objects(
        hoechst,
        settings=settings.nuclei,
        semantics=semantics,
        warnings=warnings,
        module="IdentifyPrimaryObjects(nuclei)",
    )
    if not filtered:
        return primary.labels
    return filter_nuclei(primary, hoechst, settings)
