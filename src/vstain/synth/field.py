"""Render one synthetic field of view in memory: 7 brightfield planes, 3 stains, nucleus labels.

The specimen is drawn on a canvas larger than the field (FFT-friendly sides, with a margin wider
than the defocus blur), so propagation's periodic boundary never reaches the crop and cells run
off the edges as they do on a real plate. Brightfield and fluorescence are cropped a few pixels
apart, which is the per-field misregistration real CV7000 plates show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Sequence

import numpy as np
import scipy.fft as sfft

from vstain.synth.fluorescence import stain_counts
from vstain.synth.layout import random_layout
from vstain.synth.noise import expose
from vstain.synth.optics import defocus_reach_um, defocus_stack, plane_positions_um, transmission, vignetting
from vstain.synth.parameters import SynthParameters
from vstain.synth.specimen import render_specimen
from vstain.vocabulary import FIELD_SHAPE, TARGETS, check_magnification

Seed = int | Sequence[int] | np.random.SeedSequence


@dataclass(frozen=True)
class RenderedField:
    """One rendered field: what the microscope wrote, the ground truth, and how it was made."""

    brightfield: np.ndarray  #: (7, H, W) uint16, planes Z01..Z07
    targets: dict[str, np.ndarray]  #: {nuclei, lipids, cytoplasm}: (H, W) uint16
    labels: np.ndarray  #: (H, W) uint16 nucleus labels 1..n, aligned with the targets
    shift_px: tuple[int, int]  #: a structure at brightfield (y, x) is at fluorescence (y - dy, x - dx)
    defocus_um: tuple[float, ...]  #: defocus of Z01..Z07
    params: SynthParameters
    counts: dict[str, int] = dataclass_field(default_factory=dict)  #: cells, nuclei, droplets in view

    @property
    def n_nuclei(self) -> int:
        """Nuclei (whole or cut by the border) in the label image."""
        return int(self.labels.max())

    def manifest(self) -> dict[str, Any]:
        """Per-field facts for ``plate.json``."""
        return {
            "shift_px": list(self.shift_px),
            "defocus_um": [round(z, 4) for z in self.defocus_um],
            "n_nuclei": self.n_nuclei,
            **self.counts,
        }


def field_shape(magnification: str, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size`` if given, else the real full-field shape of ``magnification``."""
    check_magnification(magnification)
    return tuple(size) if size is not None else FIELD_SHAPE[magnification]  # type: ignore[return-value]


def render_field(
    *,
    magnification: str = "20x",
    seed: Seed = 0,
    size: tuple[int, int] | None = None,
    params: SynthParameters | None = None,
) -> RenderedField:
    """Render one field; the same arguments always give the same arrays.

    Parameters
    ----------
    magnification
        20x, 40x or 60x (sets the pixel size, optics and levels unless ``params`` is given).
    seed
        Integer, sequence of integers or ``SeedSequence`` for every random draw.
    size
        ``(rows, cols)``; default the full CV7000 field (2154x2554 at 20x, 2156x2556 at 40x/60x).
    params
        Model parameters; default :meth:`SynthParameters.for_magnification`.
    """
    params = params or SynthParameters.for_magnification(magnification)
    if params.magnification != magnification:
        raise ValueError(f"params are for {params.magnification}, not {magnification}")
    rows, cols = field_shape(magnification, size)
    if rows < 8 or cols < 8:
        raise ValueError(f"field size {rows}x{cols} is too small (at least 8x8)")
    rng = np.random.default_rng(seed)
    shift = tuple(int(s) for s in rng.integers(-params.max_shift_px, params.max_shift_px + 1, 2))
    focus_offset = float(rng.normal(0.0, params.focus_jitter_um))
    margin = math.ceil(params.px(defocus_reach_um(params))) + params.max_shift_px + 8
    canvas = (sfft.next_fast_len(rows + 2 * margin), sfft.next_fast_len(cols + 2 * margin))
    extent_um = (canvas[0] * params.pixel_size_um, canvas[1] * params.pixel_size_um)

    layout = random_layout(rng, extent_um, params)
    specimen = render_specimen(layout, canvas, params, rng)
    defocus = plane_positions_um(params, focus_offset_um=focus_offset)

    bf_window = (slice(margin, margin + rows), slice(margin, margin + cols))
    fl_window = (slice(margin + shift[0], margin + shift[0] + rows), slice(margin + shift[1], margin + shift[1] + cols))
    illumination = vignetting((rows, cols), full_shape=FIELD_SHAPE[magnification], strength=params.vignetting)

    intensity = defocus_stack(transmission(specimen, params), pixel_size_um=params.pixel_size_um,
                              defocus_um=defocus, params=params)
    camera = dict(offset=params.camera_offset, gain=params.gain, read_noise=params.read_noise)
    bf_scale = (params.brightfield_counts - params.camera_offset) * illumination
    brightfield = np.stack([
        expose(params.camera_offset + bf_scale * plane[bf_window], rng, **camera) for plane in intensity
    ])
    del intensity

    expected = stain_counts(specimen, params, window=fl_window, illumination=illumination)
    targets = {target: expose(expected[target], rng, **camera) for target in TARGETS}

    labels, owners = _sequential(specimen.nucleus_labels[fl_window])
    in_view = layout.droplet_center / params.pixel_size_um
    droplets_in_view = np.sum(
        (in_view[:, 0] >= fl_window[0].start) & (in_view[:, 0] < fl_window[0].stop)
        & (in_view[:, 1] >= fl_window[1].start) & (in_view[:, 1] < fl_window[1].stop)
    )
    counts = {
        "n_cells_with_nucleus_in_view": len(owners),
        "n_adipocytes_in_view": int(np.count_nonzero(layout.differentiated[owners - 1])),
        "n_droplets_in_view": int(droplets_in_view),
    }
    return RenderedField(
        brightfield=brightfield, targets=targets, labels=labels, shift_px=shift,  # type: ignore[arg-type]
        defocus_um=tuple(float(z) for z in defocus), params=params, counts=counts,
    )


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the labels present to 1..n (in increasing order); also return the old labels."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lookup = np.cumsum(present).astype(np.uint16)
    lookup[0] = 0
    return lookup[labels], np.flatnonzero(present)
