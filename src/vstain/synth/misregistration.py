"""Where each stain lands against the brightfield: a known subpixel offset per site and stain.

On the CV7000 brightfield and fluorescence pass through different light paths and cameras, so a
stain is offset from the brightfield by a few pixels, by an amount that depends on the field's
position (the site, the same in every well) and slightly on the channel. The model::

    d(site, stain) = shift_px
                   + shift_site_px * sin(2π (site - 1) / shift_site_period + shift_site_phase)
                   + shift_channel_px[stain]

(per axis, ``(dy, dx)``), plus a tiny magnification difference ``shift_scale`` about the field
centre ``c``. Sign convention (``plate.json`` and :class:`~vstain.synth.field.RenderedField`): a
structure at brightfield pixel ``p = (y, x)`` appears at fluorescence pixel

    q = c + (1 + shift_scale) · (p - c) - d,

i.e. at ``(y - dy, x - dx)`` when ``shift_scale`` is 0. The nucleus masks follow C01.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vstain.synth.parameters import SynthParameters
from vstain.vocabulary import FIELD_SHAPE, TARGETS, channel_of

#: Relative sizes of the parts of a shift drawn by :func:`shift_overrides` (of ``max_shift_px``).
_COMMON = (0.45, 0.6)
_SITE = (0.15, 0.3)
_CHANNEL = 0.07
_SCALE = 0.02  # of max_shift_px, at a full 20x field's corner


def site_offsets(params: SynthParameters, site: int) -> dict[str, tuple[float, float]]:
    """Offset ``(dy, dx)`` in pixels of each stain ``{nuclei, lipids, cytoplasm}`` at field ``site``.

    Parameters
    ----------
    params
        The ``shift_*`` fields define the offsets (all zero on the default plate).
    site
        Field number (F001 is 1); the offset is the same in every well.
    """
    angle = 2 * math.pi * (site - 1) / params.shift_site_period
    common = [
        params.shift_px[a] + params.shift_site_px[a] * math.sin(angle + params.shift_site_phase[a])
        for a in (0, 1)
    ]
    return {
        target: (common[0] + extra[0], common[1] + extra[1])
        for target, extra in zip(TARGETS, params.shift_channel_px)
    }


def is_aligned(params: SynthParameters) -> bool:
    """True if no stain is offset or scaled at any site."""
    return (
        params.shift_scale == 0
        and not any(params.shift_px) and not any(params.shift_site_px)
        and not any(v for pair in params.shift_channel_px for v in pair)
    )


def channel_offsets(params: SynthParameters, site: int) -> dict[str, list[float]]:
    """:func:`site_offsets` keyed by channel (``{"C01": [dy, dx], ...}``), rounded for ``plate.json``."""
    return {
        f"C{channel_of(target):02d}": [round(dy, 6), round(dx, 6)]
        for target, (dy, dx) in site_offsets(params, site).items()
    }


def shift_overrides(max_shift_px: float, rng: np.random.Generator) -> dict[str, Any]:
    """``shift_*`` fields of a plausible misregistration no larger than ``max_shift_px`` per axis.

    A common offset of 45-60% of ``max_shift_px`` in a random direction, a site term of 15-30%
    (random phases, a period of 5-11 fields), per-stain differences of up to 7% and a scale
    difference that moves a full 20x field's corner by up to 2%. Together at most
    ``max_shift_px`` per axis anywhere in a full field. ``max_shift_px = 0`` gives an aligned plate.
    """
    if not 0 <= max_shift_px:
        raise ValueError(f"max_shift_px must be >= 0, not {max_shift_px}")
    direction = rng.uniform(0, 2 * math.pi)
    common = rng.uniform(*_COMMON) * max_shift_px
    site = rng.uniform(*_SITE, 2) * max_shift_px
    phase = rng.uniform(0, 2 * math.pi, 2)
    period = rng.uniform(5.0, 11.0)
    channel = rng.uniform(-_CHANNEL, _CHANNEL, (len(TARGETS), 2)) * max_shift_px
    corner = math.hypot(*((n - 1) / 2 for n in FIELD_SHAPE["20x"]))
    scale = rng.uniform(-1.0, 1.0) * _SCALE * max_shift_px / corner
    return {
        "shift_px": (round(common * math.sin(direction), 6), round(common * math.cos(direction), 6)),
        "shift_site_px": tuple(round(float(v), 6) for v in site),
        "shift_site_period": round(period, 6),
        "shift_site_phase": tuple(round(float(v), 6) for v in phase),
        "shift_channel_px": tuple((round(float(dy), 6), round(float(dx), 6)) for dy, dx in channel),
        "shift_scale": float(f"{scale:.6g}"),
    }
