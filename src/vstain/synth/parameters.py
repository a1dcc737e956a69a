"""Every number the synthetic plate model uses, in physical units, in one frozen record.

Geometry lives in micrometres so that the same culture looks bigger at 40x and 60x; only the
pixel size, the optics and the camera levels change with the magnification. The defaults (preset
``reference``) are set so that raw counts land near the challenge's statistics (HASTE
``exp_stats``: fluorescence means 412 / 700 / 663 at 20x, brightfield ≈ 2600 / 713 / 525 at
20x / 40x / 60x) and so that nuclei sit between the challenge pipelines' threshold floor
(0.02 × 65535 at 20x) and their brightness cap (0.04 × 65535).

Named variants of the defaults live in :mod:`vstain.synth.presets`, seeded random ones in
:mod:`vstain.synth.randomize`; ``docs/synthetic-data.md`` tabulates every field with its range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from vstain.errors import ConfigError
from vstain.vocabulary import FIELD_SHAPE, PIXEL_SIZE_UM, TARGETS, check_magnification

#: Largest brightfield/fluorescence misregistration (px, per axis, anywhere in a field) the
#: renderer accepts: several times what real instruments show, and a bound on the render canvas.
MAX_SHIFT_PX = 16.0

CELL_ARRANGEMENTS = ("lattice", "clumps")

# Per-magnification settings: objective NA (CV7000 20x/0.75 dry, 40x/0.95 dry, 60x/1.2 water),
# z-step, camera offset, and the levels that reproduce the reference statistics.
_BY_MAGNIFICATION: dict[str, dict[str, Any]] = {
    "20x": dict(
        objective_na=0.75, plane_step_um=2.0, camera_offset=100.0,
        brightfield_counts=2760.0,
        nucleus_counts=2150.0, nuclei_background=310.0,
        lipid_counts=2500.0, lipids_background=250.0,
        cytoplasm_counts=760.0, cytoplasm_background=200.0,
        debris_peak_counts=90000.0,
    ),
    "40x": dict(
        objective_na=0.95, plane_step_um=1.5, camera_offset=20.0,
        brightfield_counts=755.0,
        nucleus_counts=2200.0, nuclei_background=260.0,
        lipid_counts=2400.0, lipids_background=220.0,
        cytoplasm_counts=400.0, cytoplasm_background=130.0,
        debris_peak_counts=30000.0,
    ),
    "60x": dict(
        objective_na=1.2, plane_step_um=1.0, camera_offset=10.0,
        brightfield_counts=553.0,
        nucleus_counts=2200.0, nuclei_background=200.0,
        lipid_counts=4900.0, lipids_background=330.0,
        cytoplasm_counts=425.0, cytoplasm_background=95.0,
        debris_peak_counts=10000.0,
    ),
}

_ZERO_PAIRS = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))


class SynthParameterError(ConfigError, ValueError):
    """A synthetic-plate parameter that does not exist or is out of its range."""


@dataclass(frozen=True)
class SynthParameters:
    """The synthetic culture, microscope and camera. Lengths in µm, intensities in raw counts.

    Build one with :meth:`for_magnification`; override any field with :func:`dataclasses.replace`.
    Per-stain tuples are in the order C01 nuclei, C02 lipids, C03 cytoplasm.
    """

    magnification: str
    pixel_size_um: float

    # --- culture (µm) -------------------------------------------------------------------------
    cell_spacing_um: tuple[float, float] = (38.0, 50.0)  #: hexagonal lattice pitch, drawn per field
    cell_jitter: float = 0.28  #: lattice jitter as a fraction of the pitch
    cell_dropout: float = 0.12  #: fraction of lattice sites left empty (gaps in the monolayer)
    cell_arrangement: str = "lattice"  #: "lattice" (a monolayer) or "clumps" (islands, empty areas)
    clump_size_um: float = 150.0  #: correlation length of the clumps ("clumps" only)
    clump_coverage: float = 0.55  #: fraction of the area the clumps cover ("clumps" only)
    cell_radius_fraction: tuple[float, float] = (0.55, 0.8)  #: cell radius / pitch
    undifferentiated_fraction: float = 0.2  #: cells without lipid droplets (pre-adipocytes)
    nucleus_diameter_um: tuple[float, float] = (10.0, 15.0)  #: major axis
    nucleus_aspect: tuple[float, float] = (0.7, 0.95)  #: minor / major axis
    nucleus_offset_fraction: float = 0.3  #: how far droplets push the nucleus off centre (× pitch)
    nucleus_thickness_um: float = 4.0
    nucleoli_per_nucleus: tuple[int, int] = (1, 4)
    chromatin_texture: float = 0.2  #: relative amplitude of the chromatin grain
    chromatin_grain_um: float = 0.45  #: size (σ) of the chromatin grain
    chromocenters_per_nucleus: tuple[int, int] = (0, 0)  #: bright heterochromatin foci (mouse cells)
    chromocenter_brightness: float = 0.8  #: extra Hoechst in a focus, relative to the nucleus
    droplet_radius_um: tuple[float, float] = (1.0, 15.0)
    droplets_per_cell: tuple[int, int] = (4, 90)  #: candidate droplets tried per adipocyte
    cytoplasm_thickness_um: tuple[float, float] = (2.0, 4.0)
    cytoplasm_loading_sigma: float = 0.3  #: log-normal spread of the CellTracker loading per cell
    bright_nucleus_fraction: float = 0.02  #: condensed (apoptotic) nuclei, 2-3x brighter
    debris_per_mm2: float = 6.0  #: small, very bright and dark particles

    # --- brightfield optics ---------------------------------------------------------------------
    wavelength_um: float = 0.55
    medium_index: float = 1.335
    objective_na: float = 0.75
    condenser_na: float = 0.3
    plane_step_um: float = 2.0
    focus_offset_um: float = 0.0  #: systematic offset of the whole stack (Z04 sits this far off focus)
    focus_jitter_um: float = 0.4  #: per-field autofocus error (σ)
    brightfield_blur_um: float = 0.0  #: extra in-focus blur σ (aberrations, a dirty optical path)
    lipid_index_step: float = 0.1  #: effective refractive-index excess of lipid (see optics.py)
    nucleus_index_step: float = 0.006
    cytoplasm_index_step: float = 0.015
    lipid_absorption_per_um: float = 0.004
    nucleus_absorption_per_um: float = 0.004
    cytoplasm_absorption_per_um: float = 0.01
    vignetting: float = 0.12  #: relative fall-off at the corner of a full field
    brightfield_gradient: float = 0.0  #: peak-to-peak relative illumination tilt across the field
    brightfield_gradient_angle_deg: float = 0.0  #: direction of increasing light (0 = +x, 90 = +y)

    # --- fluorescence -----------------------------------------------------------------------------
    fluorescence_blur_um: float = 0.35  #: in-focus PSF sigma
    haze_blur_um: float = 3.0  #: out-of-focus halo sigma
    haze_fraction: float = 0.15
    lipid_fill: float = 1.0  #: BODIPY in the droplet's body (1: filled disks, small: rings)
    lipid_rim: float = 0.45  #: extra brightness of the rim of large droplets
    lipid_depth_of_field_um: float = 2.5
    cytoplasm_over_nucleus: float = 0.55  #: CellTracker over the nucleus / beside it
    cytoplasm_fill: float = 0.0  #: 0: CellTracker ∝ cytoplasm height; 1: fills the cell body evenly
    stain_gradient: tuple[float, float, float] = (0.0, 0.0, 0.0)  #: per stain, like brightfield_gradient
    stain_gradient_angle_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    # --- misregistration (pixels; see misregistration.py) ---------------------------------------
    shift_px: tuple[float, float] = (0.0, 0.0)  #: offset (dy, dx) common to every site and stain
    shift_site_px: tuple[float, float] = (0.0, 0.0)  #: amplitude (dy, dx) of the smooth site term
    shift_site_period: float = 7.0  #: period of the site term, in fields
    shift_site_phase: tuple[float, float] = (0.0, math.pi / 2)  #: phase (radians) of the site term
    shift_channel_px: tuple[tuple[float, float], ...] = _ZERO_PAIRS  #: per-stain extra (dy, dx)
    shift_scale: float = 0.0  #: fluorescence magnification / brightfield magnification - 1

    # --- camera and levels (raw counts) ----------------------------------------------------------
    brightfield_counts: float = 2760.0  #: unobstructed illumination (before vignetting)
    nucleus_counts: float = 2150.0
    nuclei_background: float = 310.0
    lipid_counts: float = 2500.0
    lipids_background: float = 250.0
    cytoplasm_counts: float = 760.0
    cytoplasm_background: float = 200.0
    debris_peak_counts: float = 90000.0
    camera_offset: float = 100.0
    gain: float = 1.0  #: counts per photo-electron
    read_noise: float = 2.0  #: counts

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def for_magnification(
        cls, magnification: str, *, preset: str | None = None, **overrides: Any
    ) -> "SynthParameters":
        """Parameters of ``magnification`` (20x, 40x, 60x) under ``preset``, with ``overrides``.

        Parameters
        ----------
        magnification
            Sets the pixel size, the objective and the reference levels.
        preset
            A name from :data:`vstain.synth.presets.PRESETS` (default ``reference``, today's plate).
        **overrides
            Any field, applied last (lists are accepted where the field is a tuple).

        Raises
        ------
        SynthParameterError
            For an unknown preset or field name, or a value out of its range.
        """
        from vstain.synth.presets import preset_overrides

        check_magnification(magnification)
        values = {
            "magnification": magnification,
            "pixel_size_um": PIXEL_SIZE_UM[magnification],
            **_BY_MAGNIFICATION[magnification],
        }
        _reject_unknown(overrides)
        values.update(preset_overrides(preset or "reference", magnification))
        values.update(overrides)
        return cls(**_as_tuples(values))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SynthParameters":
        """The parameters :meth:`to_dict` wrote (e.g. from ``plate.json``), checked again."""
        _reject_unknown(values)
        return cls(**_as_tuples(dict(values)))

    def px(self, length_um: float) -> float:
        """``length_um`` in pixels at this magnification."""
        return length_um / self.pixel_size_um

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: _as_lists(v) for k, v in dataclasses.asdict(self).items()}


def reference_value(name: str, magnification: str) -> Any:
    """The ``reference`` value of field ``name`` at ``magnification`` (what presets scale)."""
    check_magnification(magnification)
    if name in _BY_MAGNIFICATION[magnification]:
        return _BY_MAGNIFICATION[magnification][name]
    fields = {f.name: f for f in dataclasses.fields(SynthParameters)}
    if name not in fields or fields[name].default is dataclasses.MISSING:
        raise SynthParameterError(f"unknown synth parameter {name!r}")
    return fields[name].default


def field_names() -> list[str]:
    """Names of every :class:`SynthParameters` field."""
    return [f.name for f in dataclasses.fields(SynthParameters)]


def _reject_unknown(values: Mapping[str, Any]) -> None:
    unknown = set(values) - set(field_names())
    if unknown:
        raise SynthParameterError(f"unknown synth parameter(s): {', '.join(sorted(unknown))}")


def _as_tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _tuple(v) for k, v in values.items()}


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


# Ranges a value must lie in to be physical (not the plausible ranges randomisation draws from).
_NON_NEGATIVE = (
    "cell_jitter", "cell_dropout", "undifferentiated_fraction", "nucleus_offset_fraction",
    "chromatin_texture", "chromocenter_brightness", "bright_nucleus_fraction", "debris_per_mm2",
    "cytoplasm_loading_sigma", "focus_jitter_um", "brightfield_blur_um", "lipid_index_step",
    "nucleus_index_step", "cytoplasm_index_step", "lipid_absorption_per_um",
    "nucleus_absorption_per_um", "cytoplasm_absorption_per_um", "haze_fraction", "lipid_fill",
    "lipid_rim", "brightfield_counts", "nucleus_counts", "nuclei_background", "lipid_counts",
    "lipids_background", "cytoplasm_counts", "cytoplasm_background", "debris_peak_counts",
    "camera_offset", "read_noise", "brightfield_gradient",
)
_POSITIVE = (
    "pixel_size_um", "clump_size_um", "nucleus_thickness_um", "chromatin_grain_um", "wavelength_um",
    "medium_index", "objective_na", "condenser_na", "plane_step_um", "fluorescence_blur_um",
    "haze_blur_um", "lipid_depth_of_field_um", "gain", "shift_site_period",
)
_FRACTIONS = ("cell_dropout", "undifferentiated_fraction", "bright_nucleus_fraction", "haze_fraction",
              "cytoplasm_fill", "cytoplasm_over_nucleus", "vignetting")


def _check(p: SynthParameters) -> None:
    """Raise :class:`SynthParameterError` naming the first field that is out of its range."""
    def fail(name: str, why: str) -> None:
        raise SynthParameterError(f"synth parameter {name} = {getattr(p, name)!r}: {why}")

    check_magnification(p.magnification)
    _check_types(p)
    for name in _NON_NEGATIVE:
        if not getattr(p, name) >= 0:
            fail(name, "must be >= 0")
    for name in _POSITIVE:
        if not getattr(p, name) > 0:
            fail(name, "must be > 0")
    for name in _FRACTIONS:
        if not 0 <= getattr(p, name) <= 1:
            fail(name, "must lie in [0, 1]")
    if p.cell_arrangement not in CELL_ARRANGEMENTS:
        fail("cell_arrangement", f"choose one of {', '.join(CELL_ARRANGEMENTS)}")
    if not 0 < p.clump_coverage <= 1:
        fail("clump_coverage", "must lie in (0, 1]")
    for name in ("cell_spacing_um", "cell_radius_fraction", "nucleus_diameter_um", "nucleus_aspect",
                 "nucleoli_per_nucleus", "chromocenters_per_nucleus", "droplet_radius_um",
                 "droplets_per_cell", "cytoplasm_thickness_um"):
        low_high = getattr(p, name)
        if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
            fail(name, "must be a pair (low, high) with 0 <= low <= high")
    for name in ("cell_spacing_um", "nucleus_diameter_um", "droplet_radius_um", "cytoplasm_thickness_um"):
        if not getattr(p, name)[0] > 0:
            fail(name, "the low end must be > 0")
    if p.nucleus_aspect[1] > 1:
        fail("nucleus_aspect", "minor / major cannot exceed 1")
    if p.objective_na >= p.medium_index:
        fail("objective_na", f"must be below the medium index {p.medium_index}")
    for name in ("stain_gradient", "stain_gradient_angle_deg", "shift_channel_px"):
        if len(getattr(p, name)) != len(TARGETS):
            fail(name, f"needs one entry per stain ({', '.join(TARGETS)})")
    if any(g < 0 for g in p.stain_gradient):
        fail("stain_gradient", "must be >= 0")
    # A tilt of g changes the light by at most ±g/2 (at the full field's corners): it must stay lit.
    if p.brightfield_gradient >= 2:
        fail("brightfield_gradient", "must be below 2 (the far corner would be unlit)")
    if max(p.stain_gradient) >= 2:
        fail("stain_gradient", "must be below 2 (the far corner would be unlit)")
    for name in ("shift_px", "shift_site_px", "shift_site_phase"):
        if len(getattr(p, name)) != 2:
            fail(name, "must be a pair (dy, dx)")
    if any(len(pair) != 2 for pair in p.shift_channel_px):
        fail("shift_channel_px", "needs one (dy, dx) pair per stain")
    if not -0.01 <= p.shift_scale <= 0.01:
        fail("shift_scale", "must lie in [-0.01, 0.01] (a relative magnification difference)")
    reach = max_shift_reach_px(p)
    if reach > MAX_SHIFT_PX:
        fail("shift_px", f"shifts reach {reach:.1f} px at a field corner; at most {MAX_SHIFT_PX:g} px")


def _check_types(p: SynthParameters) -> None:
    """Numbers where numbers belong, pairs where pairs belong: one line naming the field otherwise."""
    for f in dataclasses.fields(p):
        if f.name == "magnification":
            continue
        value = getattr(p, f.name)
        if isinstance(f.default, str):
            ok, kind = isinstance(value, str), "text"
        elif isinstance(f.default, tuple):
            entries = [x for v in value for x in (v if isinstance(v, tuple) else (v,))] \
                if isinstance(value, tuple) else [None]
            ok, kind = all(_is_number(x) for x in entries), "a list of numbers"
        else:  # a number (pixel_size_um has no default)
            ok, kind = _is_number(value), "a number"
        if not ok:
            raise SynthParameterError(f"synth parameter {f.name} = {value!r}: must be {kind}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def max_shift_reach_px(p: SynthParameters, shape: tuple[int, int] | None = None) -> float:
    """Bound on |shift| per axis anywhere in a field of ``shape`` (default: the full field), in px."""
    rows, cols = shape if shape is not None else FIELD_SHAPE[p.magnification]
    per_axis = [
        abs(p.shift_px[a]) + abs(p.shift_site_px[a]) + max(abs(pair[a]) for pair in p.shift_channel_px)
        for a in (0, 1)
    ]
    half = ((rows - 1) / 2, (cols - 1) / 2)
    return max(per_axis[a] + abs(p.shift_scale) * half[a] for a in (0, 1))
