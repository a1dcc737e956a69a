"""Realistic synthetic CV7000 plates: adipocyte cultures seen in brightfield and three stains.

:func:`render_field` renders one field in memory; :func:`generate_plate` writes a whole plate
(images, nucleus masks, ``plate.json``) in the challenge layout. See ``docs/synthetic-data.md``.
"""

from vstain.synth.field import RenderedField, render_field
from vstain.synth.parameters import SynthParameters
from vstain.synth.plate import DEFAULT_PLATE_ID, generate_plate, well_names

__all__ = ["DEFAULT_PLATE_ID", "RenderedField", "SynthParameters", "generate_plate", "render_field", "well_names"]
