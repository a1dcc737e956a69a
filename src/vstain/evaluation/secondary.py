"""IdentifySecondaryObjects by propagation, CellProfiler 4.0.5 semantics (docs/cellprofiler-pipeline.md §4.4).

:func:`propagate_cells` grows cells from filtered nuclei over the lipid + cytoplasm composite:

1. adaptive MCE threshold of the composite → mask M;
2. seeds = the primary module's *unedited* watershed labels, with every object that is not in
   the filtered nuclei zeroed unless it touches the image edge (edge objects still compete for
   territory; their regions are dropped in step 5);
3. centrosome's ``propagate`` (Dijkstra over 8-neighbours inside M, step cost
   ``sqrt(S² + λ² L1)`` with S the 3x3 intensity difference) with λ = the regularization factor;
4. fill background pockets enclosed by one cell;
5. renumber every region to the largest filtered-nucleus label inside it, so cell k ↔ nucleus k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.ndimage as ndi
from centrosome.cpmorphology import fill_labeled_holes
from centrosome.propagate import propagate

from vstain.evaluation.threshold import Semantics, apply_threshold

if TYPE_CHECKING:
    from vstain.evaluation.settings import CellSettings


@dataclass(frozen=True)
class SecondaryObjects:
    """Result of :func:`propagate_cells`: ``labels`` numbered like the primary objects."""

    labels: np.ndarray
    threshold: float | np.ndarray


def seed_labels(unedited: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Propagation seeds: ``unedited`` labels outside ``primary`` zeroed unless touching the edge."""
    seeds = unedited.copy()
    frame = np.concatenate([seeds[0, :], seeds[-1, :], seeds[:, 0], seeds[:, -1]])
    touching = np.zeros(int(seeds.max(initial=0)) + 1, bool)
    touching[np.unique(frame)] = True
    seeds[~touching[seeds] & (primary == 0)] = 0
    return seeds


def renumber_to_primary(labels: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Give each region of ``labels`` the largest ``primary`` label inside it (0 if none)."""
    max_out = int(labels.max(initial=0))
    if max_out == 0:
        return labels.copy()
    lookup = np.asarray(ndi.maximum(primary, labels, np.arange(max_out + 1)), dtype=np.int32)
    lookup[0] = 0
    return lookup[labels]


def propagate_cells(
    image: np.ndarray,
    primary: np.ndarray,
    unedited: np.ndarray,
    *,
    settings: CellSettings,
    semantics: Semantics = "cp4",
    warnings: list[str] | None = None,
    module: str = "IdentifySecondaryObjects",
) -> SecondaryObjects:
    """Cells grown from ``primary`` (final nuclei) over ``image`` (the composite, 0-1 scale).

    ``unedited`` is the nuclei module's watershed output (:attr:`PrimaryObjects.unedited_labels`).
    """
    mask, threshold = apply_threshold(image, settings.threshold, semantics=semantics, warnings=warnings, module=module)
    seeds = seed_labels(unedited, primary)
    labels, _ = propagate(image, seeds, mask, settings.regularization)
    if settings.fill_holes:
        labels = fill_labeled_holes(labels, mask=labels == 0)
    return SecondaryObjects(labels=renumber_to_primary(labels, primary), threshold=threshold)
