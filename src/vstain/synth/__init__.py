"""Realistic synthetic CV7000 plates: adipocyte cultures seen in brightfield and three stains.

:func:`render_field` renders one field in memory; :func:`generate_plate` writes a whole plate
(images, nucleus masks, ``plate.json``) in the challenge layout. :data:`PRESETS` names plate
variants, :func:`randomized_parameters` draws random ones, :func:`site_offsets` gives the known
stain-to-brightfield shifts. See ``docs/synthetic-data.md``.
"""

from vstain.synth.field import RenderedField, render_field
from vstain.synth.misregistration import site_offsets
from vstain.synth.parameters import MAX_SHIFT_PX, SynthParameters
from vstain.synth.plate import DEFAULT_PLATE_ID, generate_plate, plate_parameters, well_names
from vstain.synth.presets import PRESETS, Preset
from vstain.synth.randomize import VARIATIONS, randomized_parameters

__all__ = [
    "DEFAULT_PLATE_ID", "MAX_SHIFT_PX", "PRESETS", "Preset", "RenderedField", "SynthParameters", "VARIATIONS",
    "generate_plate", "plate_parameters", "randomized_parameters", "render_field", "site_offsets", "well_names",
]
