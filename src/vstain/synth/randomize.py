"""Seeded random plate variants: every varied parameter drawn from a documented plausible range.

``randomized_parameters("20x", seed=7)`` draws each entry of :data:`VARIATIONS` (and a
misregistration, :func:`vstain.synth.misregistration.shift_overrides`) and returns
:class:`~vstain.synth.parameters.SynthParameters`. The same ``(magnification, seed)`` always gives
the same parameters. Every variation has its own random stream, ``SeedSequence([seed,
magnification, crc32(name)])``, so adding a variation to the table does not change the others,
and a magnification's draw does not depend on which other magnifications a plate has.

Ranges are plausible for adipocyte cultures on a CV7000, wider than one lab's plates differ, and
keep the challenge pipelines working on the true stains: nuclei stay between the 20x threshold
floor and brightness cap (the drawn Hoechst factor applies to a typical nucleus's mean, after
blur, halo and chromocenters; C01's illumination varies less than the other stains'), and 20-80
px wide at 20x.
``relative`` ranges multiply the magnification's reference value (for a ``(low, high)`` pair:
both ends), so "half the stain" is half at every magnification.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from vstain.synth.fluorescence import typical_nucleus_level
from vstain.synth.misregistration import shift_overrides
from vstain.synth.parameters import SynthParameters, reference_value
from vstain.vocabulary import MAGNIFICATIONS, check_magnification


@dataclass(frozen=True)
class Variation:
    """How one parameter (or one end of a pair, or one stain of a triple) is drawn."""

    name: str  #: SynthParameters field
    low: float = 0.0
    high: float = 0.0
    log: bool = False  #: log-uniform instead of uniform
    relative: bool = False  #: a factor on the magnification's reference value
    element: int | None = None  #: which entry of a tuple field this draws (others keep their value)
    integer: bool = False
    choices: tuple[Any, ...] = ()  #: draw one of these (with ``weights``) instead of a number
    weights: tuple[float, ...] = ()
    meaning: str = ""

    def draw(self, rng: np.random.Generator) -> Any:
        """One value (or factor) from this range."""
        if self.choices:
            p = np.asarray(self.weights or [1.0] * len(self.choices), dtype=float)
            return self.choices[int(rng.choice(len(self.choices), p=p / p.sum()))]
        if self.log:
            value = float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        else:
            value = float(rng.uniform(self.low, self.high))
        return int(round(value)) if self.integer else round(value, 6)


#: The maximum stain-to-brightfield shift (px per axis) of a random plate is drawn from this range.
MAX_SHIFT_RANGE_PX = (0.0, 4.0)

_STAINS = ("C01 nuclei", "C02 lipids", "C03 cytoplasm")

VARIATIONS: tuple[Variation, ...] = (
    # culture
    Variation("cell_spacing_um", 0.75, 1.3, relative=True, meaning="cell pitch (both ends × factor): density"),
    Variation("cell_jitter", 0.15, 0.4, meaning="disorder of the lattice"),
    Variation("cell_dropout", 0.0, 0.3, meaning="empty lattice sites"),
    Variation("cell_arrangement", choices=("lattice", "clumps"), weights=(0.7, 0.3),
              meaning="monolayer or clumps with empty areas"),
    Variation("clump_size_um", 80.0, 250.0, log=True, meaning="clump size (clumps only)"),
    Variation("clump_coverage", 0.35, 0.8, meaning="area the clumps cover (clumps only)"),
    Variation("cell_radius_fraction", 0.85, 1.3, relative=True, meaning="cell size / pitch (both ends × factor)"),
    Variation("undifferentiated_fraction", 0.05, 0.6, meaning="cells without droplets"),
    Variation("nucleus_diameter_um", 0.95, 1.25, relative=True, meaning="nucleus size (both ends × factor)"),
    Variation("chromatin_texture", 0.05, 0.45, meaning="chromatin grain amplitude"),
    Variation("chromatin_grain_um", 0.3, 0.9, meaning="chromatin grain size"),
    Variation("chromocenters_per_nucleus", choices=((0, 0), (3, 10), (8, 20)), weights=(0.6, 0.2, 0.2),
              meaning="bright chromocenters per nucleus"),
    Variation("droplet_radius_um", 0.5, 1.5, element=0, meaning="smallest droplet radius"),
    Variation("droplet_radius_um", 4.0, 18.0, log=True, element=1, meaning="largest droplet radius"),
    Variation("droplets_per_cell", 20, 200, log=True, integer=True, element=1,
              meaning="most droplets tried per adipocyte"),
    Variation("cytoplasm_loading_sigma", 0.1, 0.5, meaning="cell-to-cell CellTracker spread"),
    Variation("debris_per_mm2", 1.0, 30.0, log=True, meaning="debris density"),
    # brightfield
    Variation("nucleus_index_step", 0.001, 0.012, log=True, meaning="nucleus phase: visibility in brightfield"),
    Variation("nucleus_absorption_per_um", 0.0005, 0.008, log=True, meaning="nucleus absorption"),
    Variation("cytoplasm_index_step", 0.008, 0.025, meaning="cytoplasm phase"),
    Variation("lipid_index_step", 0.07, 0.12, meaning="droplet lens strength"),
    Variation("condenser_na", 0.2, 0.5, meaning="condenser aperture (coherence)"),
    Variation("plane_step_um", 0.75, 1.6, relative=True, meaning="z-spacing of the planes"),
    Variation("focus_offset_um", -0.75, 0.75, meaning="stack offset from focus, in reference z-steps"),
    Variation("focus_jitter_um", 0.1, 0.8, meaning="autofocus error σ"),
    Variation("brightfield_blur_um", 0.0, 0.6, meaning="aberration blur σ"),
    Variation("vignetting", 0.0, 0.2, meaning="corner fall-off"),
    Variation("brightfield_gradient", 0.0, 0.3, meaning="brightfield illumination tilt"),
    Variation("brightfield_gradient_angle_deg", 0.0, 360.0, meaning="its direction"),
    # fluorescence
    Variation("fluorescence_blur_um", 0.25, 0.6, meaning="in-focus PSF σ"),
    Variation("haze_blur_um", 2.0, 6.0, meaning="out-of-focus halo σ"),
    Variation("haze_fraction", 0.05, 0.35, meaning="out-of-focus light"),
    Variation("lipid_fill", 0.3, 1.0, meaning="filled droplets (1) or rings (small)"),
    Variation("lipid_rim", 0.0, 1.4, meaning="droplet rim brightness"),
    Variation("cytoplasm_over_nucleus", 0.15, 0.8, meaning="CellTracker over the nucleus"),
    Variation("cytoplasm_fill", 0.0, 1.0, meaning="CellTracker fills the cell body (1) or follows its height (0)"),
    Variation("stain_gradient", 0.0, 0.15, element=0, meaning="C01 nuclei illumination tilt"),
    *(Variation("stain_gradient", 0.0, 0.3, element=i, meaning=f"{s} illumination tilt")
      for i, s in enumerate(_STAINS) if i > 0),
    *(Variation("stain_gradient_angle_deg", 0.0, 360.0, element=i, meaning=f"{s} tilt direction")
      for i, s in enumerate(_STAINS)),
    # levels and camera
    Variation("brightfield_counts", 0.35, 1.5, log=True, relative=True, meaning="brightfield light"),
    Variation("nucleus_counts", 0.9, 1.05, relative=True,
              meaning="Hoechst in a typical nucleus (fluorescence.typical_nucleus_level) × ref"),
    Variation("nuclei_background", 0.5, 2.0, log=True, relative=True, meaning="C01 background"),
    Variation("lipid_counts", 0.5, 2.0, log=True, relative=True, meaning="BODIPY brightness"),
    Variation("lipids_background", 0.5, 2.0, log=True, relative=True, meaning="C02 background"),
    Variation("cytoplasm_counts", 0.5, 2.0, log=True, relative=True, meaning="CellTracker brightness"),
    Variation("cytoplasm_background", 0.5, 3.0, log=True, relative=True, meaning="C03 background"),
    Variation("gain", 0.5, 4.0, log=True, meaning="counts per photo-electron (shot noise)"),
    Variation("read_noise", 1.0, 10.0, log=True, meaning="read noise, counts"),
)


def randomized_parameters(magnification: str, seed: int, *, max_shift_px: float | None = None) -> SynthParameters:
    """A random plate variant of ``magnification``; the same arguments give the same parameters.

    Parameters
    ----------
    magnification
        20x, 40x or 60x.
    seed
        The variant seed (independent of the image seed of :func:`~vstain.synth.render_field`).
    max_shift_px
        Largest stain-to-brightfield shift per axis; default drawn from :data:`MAX_SHIFT_RANGE_PX`.
        0 gives an aligned variant.
    """
    check_magnification(magnification)
    values: dict[str, Any] = {}
    for variation in VARIATIONS:
        rng = _stream(seed, magnification, f"{variation.name}[{variation.element}]")
        value = variation.draw(rng)
        if variation.name == "focus_offset_um":
            value = round(value * reference_value("plane_step_um", magnification), 6)
        elif variation.relative:
            reference = values.get(variation.name, reference_value(variation.name, magnification))
            value = tuple(round(value * v, 6) for v in reference) if isinstance(reference, tuple) \
                else round(value * reference, 6)
        if variation.element is not None:
            current = list(values.get(variation.name, reference_value(variation.name, magnification)))
            current[variation.element] = value
            value = tuple(current)
        values[variation.name] = value
    # The pipelines find nuclei between an absolute threshold floor and a brightness cap: set the
    # Hoechst level so that a typical nucleus (after blur, halo and chromocenters) is the drawn
    # factor times the reference's.
    reference = SynthParameters.for_magnification(magnification)
    factor = values["nucleus_counts"] / reference.nucleus_counts
    unit = SynthParameters.for_magnification(magnification, **{**values, "nucleus_counts": reference.nucleus_counts})
    values["nucleus_counts"] = round(
        factor * reference.nucleus_counts * typical_nucleus_level(reference) / typical_nucleus_level(unit), 6)
    rng = _stream(seed, magnification, "misregistration")
    if max_shift_px is None:
        max_shift_px = round(float(rng.uniform(*MAX_SHIFT_RANGE_PX)), 6)
    values.update(shift_overrides(max_shift_px, rng))
    return SynthParameters.for_magnification(magnification, **values)


def _stream(seed: int, magnification: str, name: str) -> np.random.Generator:
    key = zlib.crc32(name.encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), MAGNIFICATIONS.index(magnification), key]))
