"""Render one synthetic field of view in memory: 7 brightfield planes, 3 stains, nucleus labels.

The specimen is drawn on a canvas larger than the field (FFT-friendly sides, with a margin wider
than the defocus blur and the plate's misregistration), so propagation's periodic
boundary never reaches the crop and cells run off the edges as they do on a real plate. Each
stain is sampled at its site's known subpixel offset from the brightfield
(:mod:`vstain.synth.misregistration`; none on the default plate), and the nucleus labels follow
C01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Sequence

import numpy as np
import scipy.fft as sfft

from vstain.synth.fluorescence import stain_counts
from vstain.synth.layout import random_layout
from vstain.synth.misregistration import channel_offsets, is_aligned, site_offsets
from vstain.synth.noise import expose
from vstain.synth.optics import defocus_reach_um, defocus_stack, illumination, plane_positions_um, transmission
from vstain.synth.parameters import MAX_SHIFT_PX, SynthParameterError, SynthParameters, max_shift_reach_px
from vstain.synth.specimen import nucleus_labels, render_specimen
from vstain.vocabulary import FIELD_SHAPE, TARGETS, check_magnification

Seed = int | Sequence[int] | np.random.SeedSequence


@dataclass(frozen=True)
class RenderedField:
    """One rendered field: what the microscope wrote, the ground truth, and how it was made."""

    brightfield: np.ndarray  #: (7, H, W) uint16, planes Z01..Z07
    targets: dict[str, np.ndarray]  #: {nuclei, lipids, cytoplasm}: (H, W) uint16
    labels: np.ndarray  #: (H, W) uint16 nucleus labels 1..n, aligned with C01 (nuclei)
    #: per channel ``{"C01": [dy, dx], ...}`` at the field centre: a structure at brightfield
    #: (y, x) is at that channel's (y - dy, x - dx); see :mod:`vstain.synth.misregistration`
    shift_px: dict[str, list[float]]
    defocus_um: tuple[float, ...]  #: defocus of Z01..Z07
    params: SynthParameters
    counts: dict[str, int] = dataclass_field(default_factory=dict)  #: cells, nuclei, droplets in view
    site: int = 1  #: field number the misregistration was evaluated at

    @property
    def n_nuclei(self) -> int:
        """Nuclei (whole or cut by the border) in the label image."""
        return int(self.labels.max())

    def manifest(self) -> dict[str, Any]:
        """Per-field facts for ``plate.json``."""
        return {
            "shift_px": {channel: list(offset) for channel, offset in self.shift_px.items()},
            "shift_scale": self.params.shift_scale,
            "defocus_um": [round(z, 4) for z in self.defocus_um],
            "n_nuclei": self.n_nuclei,
            **self.counts,
        }


def field_shape(magnification: str, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size`` if given, else the real full-field shape of ``magnification``."""
    check_magnification(magnification)
    return tuple(size) if size is not None else FIELD_SHAPE[magnification]  # type: ignore[return-value]


#: Misregistration room (px) every canvas keeps, as earlier versions did.
_LEGACY_SHIFT_PX = 3


def canvas_margin_px(params: SynthParameters, shape: tuple[int, int]) -> int:
    """Pixels of specimen rendered around a ``shape`` field: room for blur and misregistration.

    Room for the defocus blur, for shifts of 3 px (more if ``params``' shifts reach further)
    and 8 px of slack; at least 2.5 σ of the fluorescence halo. Fields whose shifts stay within
    3 px therefore share their canvas, hence their specimen, with the aligned field of the
    same seed (and with earlier versions of the generator).
    """
    blur = max(math.ceil(params.px(defocus_reach_um(params))) + _LEGACY_SHIFT_PX + 8,
               math.ceil(2.5 * params.px(params.haze_blur_um)))
    return blur + max(0, math.ceil(max_shift_reach_px(params, shape)) - _LEGACY_SHIFT_PX)


def render_field(
    *,
    magnification: str = "20x",
    seed: Seed = 0,
    size: tuple[int, int] | None = None,
    params: SynthParameters | None = None,
    site: int = 1,
    camera_noise: bool = True,
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
    site
        Field number (F001 is 1): where the misregistration model is evaluated. The specimen
        and noise depend on ``seed`` and ``params`` only (not the site), so the same seed at
        another site differs only in the stains' offsets.
    camera_noise
        False records the expected counts, rounded, without shot and read noise (for tests
        that need the exact signal, e.g. of a shift).
    """
    params = params or SynthParameters.for_magnification(magnification)
    if params.magnification != magnification:
        raise ValueError(f"params are for {params.magnification}, not {magnification}")
    rows, cols = field_shape(magnification, size)
    if rows < 8 or cols < 8:
        raise ValueError(f"field size {rows}x{cols} is too small (at least 8x8)")
    if max_shift_reach_px(params, (rows, cols)) > MAX_SHIFT_PX:
        raise SynthParameterError(f"shifts of a {rows}x{cols} field would exceed {MAX_SHIFT_PX:g} px at its corners; "
                                  "use a smaller shift_scale or field")
    rng = np.random.default_rng(seed)
    # Earlier versions drew a random integer misregistration first; drawing (and dropping) it
    # keeps the random stream, hence the cells and noise of a default field, as they were.
    rng.integers(-_LEGACY_SHIFT_PX, _LEGACY_SHIFT_PX + 1, 2)
    focus_offset = params.focus_offset_um + float(rng.normal(0.0, params.focus_jitter_um))
    margin = canvas_margin_px(params, (rows, cols))
    canvas = (sfft.next_fast_len(rows + 2 * margin), sfft.next_fast_len(cols + 2 * margin))
    extent_um = (canvas[0] * params.pixel_size_um, canvas[1] * params.pixel_size_um)

    layout = random_layout(rng, extent_um, params)
    specimen = render_specimen(layout, canvas, params, rng)
    defocus = plane_positions_um(params, focus_offset_um=focus_offset)

    window = (slice(margin, margin + rows), slice(margin, margin + cols))
    full = FIELD_SHAPE[magnification]
    light = {
        target: illumination((rows, cols), full_shape=full, vignetting_strength=params.vignetting,
                             gradient=params.stain_gradient[i], angle_deg=params.stain_gradient_angle_deg[i])
        for i, target in enumerate(TARGETS)
    }
    bf_light = illumination((rows, cols), full_shape=full, vignetting_strength=params.vignetting,
                            gradient=params.brightfield_gradient, angle_deg=params.brightfield_gradient_angle_deg)

    intensity = defocus_stack(transmission(specimen, params), pixel_size_um=params.pixel_size_um,
                              defocus_um=defocus, params=params)
    camera = dict(offset=params.camera_offset, gain=params.gain, read_noise=params.read_noise)

    def record(expected: np.ndarray) -> np.ndarray:
        if camera_noise:
            return expose(expected, rng, **camera)
        return np.clip(np.rint(expected), 0, 65535).astype(np.uint16)

    bf_scale = (params.brightfield_counts - params.camera_offset) * bf_light
    brightfield = np.stack([record(params.camera_offset + bf_scale * plane[window]) for plane in intensity])
    del intensity

    offsets = site_offsets(params, site)
    expected = stain_counts(specimen, params, window=window, illumination=light, offsets=offsets,
                            scale=params.shift_scale)
    targets = {target: record(expected[target]) for target in TARGETS}

    if is_aligned(params):
        canvas_labels = specimen.nucleus_labels[window]
    else:
        # The masks are what CellProfiler finds on the real C01: they follow the nuclei stain.
        dy, dx = (d / (1.0 + params.shift_scale) for d in offsets["nuclei"])
        canvas_labels = nucleus_labels(layout, (rows, cols), params, origin_px=(margin + dy, margin + dx),
                                       scale=params.shift_scale, centre_px=((rows - 1) / 2, (cols - 1) / 2))
    labels, owners = _sequential(canvas_labels)
    in_view = layout.droplet_center / params.pixel_size_um
    droplets_in_view = np.sum(
        (in_view[:, 0] >= window[0].start) & (in_view[:, 0] < window[0].stop)
        & (in_view[:, 1] >= window[1].start) & (in_view[:, 1] < window[1].stop)
    )
    counts = {
        "n_cells_with_nucleus_in_view": len(owners),
        "n_adipocytes_in_view": int(np.count_nonzero(layout.differentiated[owners - 1])),
        "n_droplets_in_view": int(droplets_in_view),
    }
    return RenderedField(
        brightfield=brightfield, targets=targets, labels=labels, shift_px=channel_offsets(params, site),
        defocus_um=tuple(float(z) for z in defocus), params=params, counts=counts, site=site,
    )


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the labels present to 1..n (in increasing order); also return the old labels."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lookup = np.cumsum(present).astype(np.uint16)
    lookup[0] = 0
    return lookup[labels], np.flatnonzero(present)
