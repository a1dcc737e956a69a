"""The names vstain speaks in: magnifications, channels, stains, split subsets and physical constants.

Each list of names is spelled out here and nowhere else: configs (pydantic ``Literal`` types),
command-line choices, folder-name patterns and file names all derive from these definitions,
so adding a magnification or a subset is a one-line change (see docs/data-format.md).
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

from vstain.errors import ConfigError

Magnification = Literal["20x", "40x", "60x"]
MAGNIFICATIONS: Final[tuple[str, ...]] = get_args(Magnification)

#: Target stains, in the order multi-output networks predict them.
Target = Literal["nuclei", "lipids", "cytoplasm"]
TARGETS: Final[tuple[str, ...]] = get_args(Target)
#: The CV7000 channel number that holds each target stain.
TARGET_CHANNELS: Final[dict[str, int]] = dict(zip(TARGETS, (1, 2, 3)))
CHANNEL_TARGETS: Final[dict[int, str]] = {c: t for t, c in TARGET_CHANNELS.items()}
#: Names the challenge's CellProfiler pipelines give the three stains.
CELLPROFILER_NAMES: Final[dict[str, str]] = dict(zip(TARGETS, ("Hoechst", "Bodipy", "CellTrackerRed")))

BRIGHTFIELD_CHANNEL: Final[int] = 4
N_PLANES: Final[int] = 7
PLANES: Final[tuple[int, ...]] = tuple(range(1, N_PLANES + 1))


def channel_name(channel: int) -> str:
    """The CV7000 name of a channel number, e.g. ``channel_name(2) == "C02"``."""
    return f"C{channel:02d}"


#: ``"C01"``, ``"C02"``, ``"C03"``: the fluorescence channels, in :data:`TARGETS` order.
TARGET_CHANNEL_NAMES: Final[tuple[str, ...]] = tuple(channel_name(TARGET_CHANNELS[t]) for t in TARGETS)
#: ``{"C01": "nuclei", ...}``.
CHANNEL_NAME_TARGETS: Final[dict[str, str]] = dict(zip(TARGET_CHANNEL_NAMES, TARGETS))

#: Subsets of a split (split CSVs, ``vstain stats --subset``; see docs/splits.md):
#: ``train`` is fitted; ``validation`` picks checkpoints and stops early; ``test`` is never read
#: by training (the user's final evaluation); ``calibration`` is never read by training either
#: (conformal calibration of uncertainty).
SplitSubset = Literal["train", "validation", "test", "calibration"]
SPLIT_SUBSETS: Final[tuple[str, ...]] = get_args(SplitSubset)
TRAIN, VALIDATION, TEST, CALIBRATION = SPLIT_SUBSETS

#: How training treats the stain-to-brightfield offsets (``data.alignment``, besides an offsets file;
#: docs/alignment.md): ignore them, or estimate them on the training fields.
AlignmentMode = Literal["none", "auto"]
ALIGNMENT_MODES: Final[tuple[str, ...]] = get_args(AlignmentMode)

#: Whose stain-to-brightfield offset a field uses (``vstain align --per``, docs/alignment.md): its
#: own confident estimate, or the consensus of its site (the same field number in every well).
OffsetsPer = Literal["field", "site"]
OFFSETS_PER: Final[tuple[str, ...]] = get_args(OffsetsPer)

#: Test-time augmentation (``vstain predict --tta``, a bundle's ``tta``): none, or the mean over the
#: eight dihedral transforms (4 rotations x optional flip).
TtaSetting = Literal[1, 8]
TTA_CHOICES: Final[tuple[int, ...]] = get_args(TtaSetting)

#: Object-plane pixel size in micrometres (CV7000 with a 2x binned sCMOS camera).
PIXEL_SIZE_UM: Final[dict[str, float]] = {"20x": 0.325, "40x": 0.1625, "60x": 0.108}
#: Full field size (rows, columns) of the challenge's images.
FIELD_SHAPE: Final[dict[str, tuple[int, int]]] = {
    "20x": (2154, 2554),
    "40x": (2156, 2556),
    "60x": (2156, 2556),
}


def magnification_folder_pattern() -> re.Pattern[str]:
    """``<mag>_images`` folder names (the challenge layout); group 1 is the magnification."""
    return re.compile(rf"^({'|'.join(map(re.escape, MAGNIFICATIONS))})_images$")


def channel_of(target: str) -> int:
    """CV7000 channel number (1-3) of a target stain name (``nuclei``, ``lipids``, ``cytoplasm``).

    Raises
    ------
    ConfigError
        If ``target`` is not one of :data:`TARGETS`.
    """
    try:
        return TARGET_CHANNELS[target]
    except KeyError:
        raise ConfigError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}") from None


def check_magnification(magnification: str) -> str:
    """Return ``magnification`` if it is one of :data:`MAGNIFICATIONS`.

    Raises
    ------
    ConfigError
        Otherwise (a ``ValueError``), naming the accepted values.
    """
    if magnification not in MAGNIFICATIONS:
        raise ConfigError(
            f"unknown magnification {magnification!r}; expected one of {', '.join(MAGNIFICATIONS)}"
        )
    return magnification
