"""The names vstain speaks in: magnifications, channels, stains and their physical constants.

Kept in one place so that configs, file names and code agree (see DESIGN.md, "Vocabulary").
"""

from __future__ import annotations

from typing import Final, Literal

Magnification = Literal["20x", "40x", "60x"]
MAGNIFICATIONS: Final[tuple[str, ...]] = ("20x", "40x", "60x")

#: Target stains and the CV7000 channel that holds each.
TARGET_CHANNELS: Final[dict[str, int]] = {"nuclei": 1, "lipids": 2, "cytoplasm": 3}
TARGETS: Final[tuple[str, ...]] = tuple(TARGET_CHANNELS)
CHANNEL_TARGETS: Final[dict[int, str]] = {c: t for t, c in TARGET_CHANNELS.items()}
#: Names the challenge's CellProfiler pipelines give the three stains.
CELLPROFILER_NAMES: Final[dict[str, str]] = {
    "nuclei": "Hoechst",
    "lipids": "Bodipy",
    "cytoplasm": "CellTrackerRed",
}

BRIGHTFIELD_CHANNEL: Final[int] = 4
N_PLANES: Final[int] = 7
PLANES: Final[tuple[int, ...]] = tuple(range(1, N_PLANES + 1))

#: Object-plane pixel size in micrometres (CV7000 with a 2x binned sCMOS camera).
PIXEL_SIZE_UM: Final[dict[str, float]] = {"20x": 0.325, "40x": 0.1625, "60x": 0.108}
#: Full field size (rows, columns) of the challenge's images.
FIELD_SHAPE: Final[dict[str, tuple[int, int]]] = {
    "20x": (2154, 2554),
    "40x": (2156, 2556),
    "60x": (2156, 2556),
}


def channel_of(target: str) -> int:
    """CV7000 channel number (1-3) of a target stain name (``nuclei``, ``lipids``, ``cytoplasm``)."""
    try:
        return TARGET_CHANNELS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}") from None


def check_magnification(magnification: str) -> str:
    """Return ``magnification`` if it is one of 20x/40x/60x, else raise ``ValueError``."""
    if magnification not in MAGNIFICATIONS:
        raise ValueError(
            f"unknown magnification {magnification!r}; expected one of {', '.join(MAGNIFICATIONS)}"
        )
    return magnification
