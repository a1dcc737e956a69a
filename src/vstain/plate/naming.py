"""CV7000 image file names: ``<plate>_<well>_T####F###L##A##Z##C##.tif``.

A value object and two pure functions; nothing else lives here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from vstain.errors import InvalidName
from vstain.vocabulary import BRIGHTFIELD_CHANNEL

_NAME = re.compile(
    r"^(?P<plate>.+)_(?P<well>[A-Za-z]{1,2}[0-9]{1,3})_"
    r"T(?P<timepoint>[0-9]{4})F(?P<field>[0-9]{3})L(?P<timeline>[0-9]{2})"
    r"A(?P<action>[0-9]{2})Z(?P<z>[0-9]{2})C(?P<channel>[0-9]{2})(?P<extension>\.(?i:tiff?))$"
)
_WELL = re.compile(r"[A-Za-z]{1,2}[0-9]{1,3}")


@dataclass(frozen=True, order=True)
class ImageName:
    """The parts of one CV7000 image file name.

    ``format_name(parse_name(s)) == s`` for every valid name ``s``.
    """

    plate: str
    well: str
    field: int
    channel: int
    z: int = 1
    action: int = 1
    timepoint: int = 1
    timeline: int = 1
    extension: str = ".tif"

    def __post_init__(self) -> None:
        if not self.plate or "/" in self.plate or "\\" in self.plate or not self.plate.isprintable():
            raise InvalidName(
                f"plate id {self.plate!r} must be non-empty, printable and contain no path separator"
            )
        if not _WELL.fullmatch(self.well):
            raise InvalidName(f"well {self.well!r} must look like D02")
        for part, value, digits in (
            ("timepoint", self.timepoint, 4),
            ("field", self.field, 3),
            ("timeline", self.timeline, 2),
            ("action", self.action, 2),
            ("z", self.z, 2),
            ("channel", self.channel, 2),
        ):
            if not 0 <= value < 10**digits:
                raise InvalidName(f"{part} {value} does not fit in {digits} digits")
        if self.extension.lower() not in (".tif", ".tiff"):
            raise InvalidName(f"extension {self.extension!r} must be .tif or .tiff (any case)")

    @property
    def field_key(self) -> tuple[str, int]:
        """``(well, field)``: the identity of the field of view this image belongs to."""
        return (self.well, self.field)

    def for_channel(self, channel: int, *, z: int = 1) -> "ImageName":
        """The name of channel ``channel`` of the same field, as the CV7000 writes it.

        Fluorescence channel k is acquired by action k at plane Z01; brightfield is action 4.
        """
        action = BRIGHTFIELD_CHANNEL if channel == BRIGHTFIELD_CHANNEL else channel
        return replace(self, channel=channel, action=action, z=z, extension=".tif")


def parse_name(filename: str) -> ImageName:
    """Parse a CV7000 file name (a bare name, not a path).

    Raises
    ------
    InvalidName
        With the name and the reason, if it does not follow the CV7000 pattern.
    """
    match = _NAME.fullmatch(filename)
    if match is None:
        raise InvalidName(
            f"{filename}: not a CV7000 image name (expected <plate>_<well>_T####F###L##A##Z##C##.tif)"
        )
    parts = match.groupdict()
    try:
        return ImageName(
            plate=parts["plate"],
            well=parts["well"],
            field=int(parts["field"]),
            channel=int(parts["channel"]),
            z=int(parts["z"]),
            action=int(parts["action"]),
            timepoint=int(parts["timepoint"]),
            timeline=int(parts["timeline"]),
            extension=parts["extension"],
        )
    except InvalidName as exc:  # e.g. a path separator in the plate id: say which file
        raise InvalidName(f"{filename}: {exc}") from None


def format_name(name: ImageName) -> str:
    """The file name of ``name`` (inverse of :func:`parse_name`)."""
    return (
        f"{name.plate}_{name.well}_T{name.timepoint:04d}F{name.field:03d}L{name.timeline:02d}"
        f"A{name.action:02d}Z{name.z:02d}C{name.channel:02d}{name.extension}"
    )
