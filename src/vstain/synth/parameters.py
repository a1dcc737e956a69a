"""Every number the synthetic plate model uses, in physical units, in one frozen record.

Geometry lives in micrometres so that the same culture looks bigger at 40x and 60x; only the
pixel size, the optics and the camera levels change with the magnification. The defaults are set
so that raw counts land near the challenge's statistics (HASTE ``exp_stats``: fluorescence means
412 / 700 / 663 at 20x, brightfield ≈ 2600 / 713 / 525 at 20x / 40x / 60x) and so that nuclei sit
between the challenge pipelines' threshold floor (0.02 × 65535 at 20x) and their brightness cap
(0.04 × 65535).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vstain.vocabulary import PIXEL_SIZE_UM, check_magnification

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


@dataclass(frozen=True)
class SynthParameters:
    """The synthetic culture, microscope and camera. Lengths in µm, intensities in raw counts.

    Build one with :meth:`for_magnification`; override any field with :func:`dataclasses.replace`.
    """

    magnification: str
    pixel_size_um: float

    # --- culture (µm) -------------------------------------------------------------------------
    cell_spacing_um: tuple[float, float] = (38.0, 50.0)  #: hexagonal lattice pitch, drawn per field
    cell_jitter: float = 0.28  #: lattice jitter as a fraction of the pitch
    cell_dropout: float = 0.12  #: fraction of lattice sites left empty (gaps in the monolayer)
    cell_radius_fraction: tuple[float, float] = (0.55, 0.8)  #: cell radius / pitch
    undifferentiated_fraction: float = 0.2  #: cells without lipid droplets (pre-adipocytes)
    nucleus_diameter_um: tuple[float, float] = (10.0, 15.0)  #: major axis
    nucleus_aspect: tuple[float, float] = (0.7, 0.95)  #: minor / major axis
    nucleus_offset_fraction: float = 0.3  #: how far droplets push the nucleus off centre (× pitch)
    nucleus_thickness_um: float = 4.0
    nucleoli_per_nucleus: tuple[int, int] = (1, 4)
    droplet_radius_um: tuple[float, float] = (1.0, 15.0)
    droplets_per_cell: tuple[int, int] = (4, 90)  #: candidate droplets tried per adipocyte
    cytoplasm_thickness_um: tuple[float, float] = (2.0, 4.0)
    bright_nucleus_fraction: float = 0.02  #: condensed (apoptotic) nuclei, 2-3x brighter
    debris_per_mm2: float = 6.0  #: small, very bright and dark particles

    # --- brightfield optics ---------------------------------------------------------------------
    wavelength_um: float = 0.55
    medium_index: float = 1.335
    objective_na: float = 0.75
    condenser_na: float = 0.3
    plane_step_um: float = 2.0
    focus_jitter_um: float = 0.4  #: per-field autofocus error
    lipid_index_step: float = 0.1  #: effective refractive-index excess of lipid (see optics.py)
    nucleus_index_step: float = 0.006
    cytoplasm_index_step: float = 0.015
    lipid_absorption_per_um: float = 0.004
    nucleus_absorption_per_um: float = 0.004
    cytoplasm_absorption_per_um: float = 0.01
    vignetting: float = 0.12  #: relative fall-off at the corner of a full field

    # --- fluorescence -----------------------------------------------------------------------------
    fluorescence_blur_um: float = 0.35  #: in-focus PSF sigma
    haze_blur_um: float = 3.0  #: out-of-focus halo sigma
    haze_fraction: float = 0.15
    lipid_rim: float = 0.45  #: extra brightness of the rim of large droplets
    lipid_depth_of_field_um: float = 2.5
    cytoplasm_over_nucleus: float = 0.55
    max_shift_px: int = 3  #: per-field brightfield/fluorescence misregistration

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

    @classmethod
    def for_magnification(cls, magnification: str, **overrides: Any) -> "SynthParameters":
        """Defaults for ``magnification`` (20x, 40x, 60x), with keyword ``overrides``."""
        check_magnification(magnification)
        values = {
            "magnification": magnification,
            "pixel_size_um": PIXEL_SIZE_UM[magnification],
            **_BY_MAGNIFICATION[magnification],
        }
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown synth parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{**values, **overrides})

    def px(self, length_um: float) -> float:
        """``length_um`` in pixels at this magnification."""
        return length_um / self.pixel_size_um

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
