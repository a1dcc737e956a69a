"""Named plate variants: each a short description and how it departs from the ``reference`` plate.

A preset sets fields to values (``values``), multiplies a magnification's reference value
(``scale``: levels and z-steps differ per magnification, so "half the stain" stays half at 40x), or
sets per-magnification values (``by_magnification``). ``reference`` is the default plate.
Resolve one with :meth:`vstain.synth.parameters.SynthParameters.for_magnification`::

    SynthParameters.for_magnification("40x", preset="faint-nuclei")

``docs/synthetic-data.md`` shows each preset next to the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from vstain.vocabulary import MAGNIFICATIONS


@dataclass(frozen=True)
class Preset:
    """A plate variant: what it imitates and the parameter changes that make it."""

    description: str
    values: Mapping[str, Any] = field(default_factory=dict)  #: field -> value, at every magnification
    scale: Mapping[str, float] = field(default_factory=dict)  #: field -> factor on the reference value
    by_magnification: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  #: mag -> field -> value


PRESETS: dict[str, Preset] = {
    "reference": Preset("the default plate: levels of the challenge's 20x/40x/60x statistics, aligned stains"),
    "faint-nuclei": Preset(
        "nuclei barely visible in brightfield (weak phase and absorption): faint grey ellipses in the outer planes",
        values=dict(nucleus_index_step=0.0015, nucleus_absorption_per_um=0.0008, nucleus_thickness_um=3.0),
    ),
    "bright-cytoplasm": Preset(
        "CellTracker Red as in adipocytes: the whole cell body fills with dye, bright almost everywhere, "
        "dark holes at droplets and nuclei, moderate background between the few gaps",
        values=dict(cytoplasm_fill=0.9, cytoplasm_over_nucleus=0.2, cytoplasm_loading_sigma=0.12,
                    cell_radius_fraction=(0.85, 1.1), cell_dropout=0.03),
        scale=dict(cytoplasm_counts=1.3, cytoplasm_background=2.2),
    ),
    "dense-small-droplets": Preset(
        "many small lipid droplets (0.6-4 µm radius) in nearly every cell",
        values=dict(droplet_radius_um=(0.6, 4.0), droplets_per_cell=(30, 250), undifferentiated_fraction=0.08),
    ),
    "sparse-large-droplets": Preset(
        "few, large droplets (4-18 µm radius) in fewer, larger cells; more pre-adipocytes",
        values=dict(droplet_radius_um=(4.0, 18.0), droplets_per_cell=(1, 10), undifferentiated_fraction=0.4),
        scale=dict(cell_spacing_um=1.15),
    ),
    "dim-noisy": Preset(
        "a dim plate: a third of the brightfield light, weaker stains, a noisier camera (gain 3, read noise 8)",
        values=dict(gain=3.0, read_noise=8.0),
        scale=dict(brightfield_counts=0.35, nucleus_counts=0.85, nuclei_background=0.6, lipid_counts=0.5,
                   lipids_background=0.6, cytoplasm_counts=0.5, cytoplasm_background=0.6),
    ),
    "defocused": Preset(
        "a wider z-step, the stack a full step off focus, blurrier optics and strong illumination gradients",
        values=dict(focus_jitter_um=0.8, fluorescence_blur_um=0.6, haze_blur_um=5.0, haze_fraction=0.3,
                    brightfield_blur_um=0.5, vignetting=0.25, brightfield_gradient=0.3,
                    brightfield_gradient_angle_deg=35.0, stain_gradient=(0.25, 0.35, 0.3),
                    stain_gradient_angle_deg=(120.0, 210.0, 300.0)),
        scale=dict(plane_step_um=1.5),
        by_magnification={mag: dict(focus_offset_um=step) for mag, step in zip(MAGNIFICATIONS, (2.0, 1.5, 1.0))},
    ),
    "shifted": Preset(
        "stains shifted against brightfield by 3-6 px, varying smoothly with the site and a little per "
        "stain, fluorescence 0.02% larger",
        values=dict(shift_px=(3.5, -2.5), shift_site_px=(1.0, 1.0), shift_site_period=7.0,
                    shift_site_phase=(0.0, math.pi / 2),
                    shift_channel_px=((0.0, 0.0), (0.3, -0.2), (-0.25, 0.3)), shift_scale=2e-4),
    ),
    "clumped": Preset(
        "cells in clumps with empty areas between them instead of a monolayer (clumps 120 / 80 / 60 µm "
        "at 20x / 40x / 60x)",
        values=dict(cell_arrangement="clumps", clump_coverage=0.5, cell_dropout=0.02),
        by_magnification={mag: dict(clump_size_um=size) for mag, size in zip(MAGNIFICATIONS, (120.0, 80.0, 60.0))},
    ),
    "rim-droplets": Preset(
        "BODIPY mostly at the droplet surface: large droplets are bright rings, not filled disks",
        values=dict(lipid_fill=0.25, lipid_rim=1.4),
    ),
    "speckled-nuclei": Preset(
        "mouse-like nuclei: coarse chromatin with 5-15 bright chromocenters each",
        values=dict(chromocenters_per_nucleus=(5, 15), chromocenter_brightness=0.9, chromatin_texture=0.3,
                    chromatin_grain_um=0.7),
        scale=dict(nucleus_counts=0.85),
    ),
}


def preset_names() -> list[str]:
    """Names of every preset, ``reference`` first."""
    return list(PRESETS)


def preset_overrides(name: str, magnification: str) -> dict[str, Any]:
    """The field values preset ``name`` sets at ``magnification`` (absolute values, ready to apply).

    Raises
    ------
    SynthParameterError
        For an unknown preset (the message lists the known ones).
    """
    from vstain.synth.parameters import SynthParameterError, reference_value

    if name not in PRESETS:
        raise SynthParameterError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    values = dict(preset.values)
    for key, factor in preset.scale.items():
        reference = reference_value(key, magnification)
        values[key] = tuple(factor * v for v in reference) if isinstance(reference, tuple) else factor * reference
    values.update(preset.by_magnification.get(magnification, {}))
    return values
