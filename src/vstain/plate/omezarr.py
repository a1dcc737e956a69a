"""OME-Zarr HCS plates (NGFF 0.5 on zarr v3): the second plate format, beside CV7000 TIFF folders.

Layout written by vstain (``vstain convert``, ``vstain predict --output X.ome.zarr``)::

    PLATE.ome.zarr/                 plate: rows, columns, wells, one acquisition per magnification
      D/02/                         well D02: its field images, each tagged with its acquisition
        0/                          one field of view (image group): multiscales + omero channels
          0/                        the (c, y, x) uint16 array, one chunk per plane
          labels/nuclei/0/          the nucleus mask, when the plate has one (a label image)

**One image per field, the planes on the channel axis.** A field's image holds its three stains
and its seven brightfield planes as ten named channels, ``C01 C02 C03 C04Z01 ... C04Z07`` (a
prediction plate holds only the predicted stains, and ``C01 std`` ... for uncertainty maps). A
z axis was not used: NGFF gives every channel the same z extent, but the stains have one plane
and brightfield seven, so a ``(c, z, y, x)`` image would either hold 18 empty planes or claim the
stains were acquired at seven depths. vstain itself treats the seven planes as the network's
seven input channels, and the channel labels are the keys of ``vstain stats``.

**One chunk per plane** (``(1, H, W)``, Blosc-zstd with bit shuffle, lossless): a field is written
plane by plane (one plane in memory), distinct fields never share a chunk file, so workers and
``torchrun`` ranks write into one plate without locks.

Identities are kept in each image group's ``vstain`` attributes: plate id, well, field number,
magnification, time point and the CV7000 file name of every channel (and of the mask), so
``vstain convert --to cv7000`` restores the exact names. Pixel sizes (micrometres, per
magnification) are in the coordinate transformations; channel names and colours in ``omero``.

**Written atomically, resumable.** zarr writes every chunk and metadata document to a temporary
file and renames it; each metadata document is written in one piece (the NGFF parts are made
by ome-zarr-py in memory, then stored); a field image's ``vstain.complete`` is set only after all
its planes are written, so an interrupted job redoes exactly the incomplete fields. Creating the
layout is idempotent: every process that creates it writes identical documents, and never
touches an existing array.

Plates from other software index too when their channel labels are vstain's
(``C01``..``C03``, ``C04Z01``..``C04Z07``, or ``nuclei``/``lipids``/``cytoplasm``), with NGFF 0.4
(zarr v2) or 0.5 metadata; their magnification comes from the acquisition name or the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from vstain.errors import InvalidName, PlateError, PlateNotFound
from vstain.plate.images import ZarrPlane
from vstain.plate.naming import ImageName, format_name
from vstain.vocabulary import (
    BRIGHTFIELD_CHANNEL,
    CHANNEL_NAME_TARGETS,
    MAGNIFICATIONS,
    PIXEL_SIZE_UM,
    PLANES,
    TARGET_CHANNEL_NAMES,
    TARGETS,
    channel_name,
)

if TYPE_CHECKING:  # zarr is imported where it is used, so `import vstain.plate` stays light
    import zarr

    from vstain.plate.index import Field, PlateIssue

FORMAT = "vstain.hcs"
VERSION = 1
SUFFIX = ".ome.zarr"
#: Path of the full-resolution array inside an image group (the only multiscales level).
LEVEL = "0"
#: Label image of the nucleus masks.
MASK_LABEL = "nuclei"
#: Suffix of the channel label of an uncertainty map (``"C02 std"``).
UNCERTAINTY_SUFFIX = " std"
#: Channel labels of a field, in the order vstain writes them.
BRIGHTFIELD_LABELS: tuple[str, ...] = tuple(f"{channel_name(BRIGHTFIELD_CHANNEL)}Z{z:02d}" for z in PLANES)
CHANNEL_LABELS: tuple[str, ...] = (*TARGET_CHANNEL_NAMES, *BRIGHTFIELD_LABELS)
_COLOURS = {"C01": "0000FF", "C02": "00FF00", "C03": "FF0000"}
_WELL = re.compile(r"^([A-Za-z]{1,2})([0-9]{1,3})$")
_ALIASES = {**{t: c for c, t in CHANNEL_NAME_TARGETS.items()}, **{f"{c}Z01": c for c in TARGET_CHANNEL_NAMES}}


def is_hcs_plate(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a zarr group (v3 ``zarr.json`` or v2 ``.zattrs``) or is named ``*.zarr``."""
    path = Path(path)
    if path.name.endswith(".zarr"):
        return True
    try:
        return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()
    except OSError:
        return False


def split_well(well: str) -> tuple[str, str]:
    """``"D02"`` -> ``("D", "02")``: the plate row and column names of a CV7000 well."""
    match = _WELL.match(well)
    if match is None:
        raise InvalidName(f"well {well!r} must look like D02")
    return match.group(1), match.group(2)


# ---------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class PlateImage:
    """What one field image of a plate holds: identity, channels (with CV7000 names), size, mask.

    ``channels`` is a tuple of ``(label, file name)`` pairs in channel-axis order.
    """

    magnification: str
    plate: str
    well: str
    field: int
    timepoint: int
    channels: tuple[tuple[str, str], ...]
    shape: tuple[int, int]
    mask: str | None = None
    mask_dtype: str = "uint16"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.magnification, self.well, self.field)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "magnification": self.magnification, "plate": self.plate, "well": self.well, "field": self.field,
            "timepoint": self.timepoint, "channels": dict(self.channels), "shape": list(self.shape),
            "mask": None if self.mask is None else {"label": MASK_LABEL, "file": self.mask, "dtype": self.mask_dtype},
        }


@dataclass
class PlateLayout:
    """The wells and field images of a plate, in a fixed order: what :func:`create_plate` creates.

    Field images are numbered ``0, 1, ...`` within each well, ordered by magnification then
    field number; :attr:`paths` gives each field's image group (``"D/02/0"``).
    """

    name: str
    images: list[PlateImage]
    paths: dict[tuple[str, str, int], str] = dataclass_field(init=False)

    def __post_init__(self) -> None:
        order = {m: i for i, m in enumerate(MAGNIFICATIONS)}
        self.images = sorted(self.images, key=lambda im: (_well_sort(im.well), order[im.magnification], im.field))
        seen = set()
        for image in self.images:
            if image.key in seen:
                raise PlateError(f"{image.magnification} {image.well} F{image.field:03d}: twice in one plate")
            seen.add(image.key)
        counters: dict[str, int] = {}
        self.paths = {}
        for image in self.images:
            row, column = split_well(image.well)
            number = counters.get(image.well, 0)
            counters[image.well] = number + 1
            self.paths[image.key] = f"{row}/{column}/{number}"

    @property
    def magnifications(self) -> list[str]:
        return sorted({im.magnification for im in self.images}, key=MAGNIFICATIONS.index)

    @property
    def wells(self) -> list[str]:
        return list(dict.fromkeys(im.well for im in self.images))

    def image(self, key: Sequence[Any]) -> PlateImage:
        key = (key[0], key[1], int(key[2]))
        for image in self.images:
            if image.key == key:
                return image
        raise PlateError(f"{key[0]} {key[1]} F{key[2]:03d}: not a field of this plate")

    def digest(self) -> str:
        """SHA-256 of the layout: equal layouts (same fields, channels, names, sizes) give equal digests."""
        text = json.dumps({"name": self.name, "images": [im.to_dict() for im in self.images]}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def source_layout(fields: Iterable[Field], *, name: str | None = None) -> PlateLayout:
    """The layout holding ``fields`` as they are: their stains, brightfield planes and masks, same names.

    Fields need :attr:`~vstain.plate.index.Field.shape` (index with ``check_headers=True``).
    """
    images = []
    for f in fields:
        if f.shape is None:
            raise PlateError(f"{f.label}: size unknown; index the plate with check_headers=True")
        channels = [(channel, f.targets[CHANNEL_NAME_TARGETS[channel]].name)
                    for channel in TARGET_CHANNEL_NAMES if CHANNEL_NAME_TARGETS[channel] in f.targets]
        channels += [(label, location.name) for label, location in zip(BRIGHTFIELD_LABELS, f.brightfield)]
        mask_dtype = "uint16"
        if f.mask is not None:
            from vstain.plate.images import read_image

            mask_dtype = str(read_image(f.mask).dtype)
        images.append(PlateImage(
            magnification=f.magnification, plate=f.plate, well=f.well, field=f.field, timepoint=f.timepoint,
            channels=tuple(channels), shape=tuple(f.shape),  # type: ignore[arg-type]
            mask=None if f.mask is None else f.mask.name, mask_dtype=mask_dtype,
        ))
    if not images:
        raise PlateError("no fields to write")
    return PlateLayout(name=name or images[0].plate, images=images)


def prediction_layout(fields: Iterable[Field], targets: Mapping[str, Sequence[str]], *, uncertainty: bool,
                      name: str | None = None) -> PlateLayout:
    """The layout of a prediction plate: per field the predicted stains (and their ``std`` maps).

    ``targets`` maps each magnification to the stains predicted for it.
    """
    images = []
    for f in fields:
        if f.shape is None:
            raise PlateError(f"{f.label}: size unknown; index the plate with check_headers=True")
        chosen = [t for t in TARGETS if t in targets[f.magnification]]
        channels = [(channel_name_of(t), f.target_filename(t)) for t in chosen]
        if uncertainty:
            channels += [(channel_name_of(t) + UNCERTAINTY_SUFFIX, f.target_filename(t)) for t in chosen]
        images.append(PlateImage(magnification=f.magnification, plate=f.plate, well=f.well, field=f.field,
                                 timepoint=f.timepoint, channels=tuple(channels),
                                 shape=tuple(f.shape)))  # type: ignore[arg-type]
    if not images:
        raise PlateError("no fields to write")
    return PlateLayout(name=name or images[0].plate, images=images)


def channel_name_of(target: str) -> str:
    """``"lipids"`` -> ``"C02"``."""
    return next(c for c, t in CHANNEL_NAME_TARGETS.items() if t == target)


def _well_sort(well: str) -> tuple[int, str, int]:
    row, column = split_well(well)
    return (len(row), row.upper(), int(column))


# ---------------------------------------------------------------------------------- writing
def create_plate(root: str | os.PathLike[str], layout: PlateLayout, *, images: Iterable[Sequence[Any]] | None = None,
                 attributes: Mapping[str, Any] | None = None) -> None:
    """Create (or reopen) the plate, its wells and the field images ``images`` (default: all).

    Idempotent and safe to run from several processes at once: metadata documents are written
    whole, arrays are created only where absent, existing chunks are never touched. An existing
    plate made for another layout is refused.

    Parameters
    ----------
    root
        The ``.ome.zarr`` folder.
    layout
        What the plate holds (:func:`source_layout`, :func:`prediction_layout`).
    images
        Field keys whose image groups and arrays this process creates (``torchrun`` ranks create
        their own share); None: every field.
    attributes
        Extra entries for the plate's ``vstain`` attributes (e.g. the source plate).

    Raises
    ------
    PlateError
        If ``root`` is a file, or a plate with another layout.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PlateError(f"{root}: exists and is not a folder (`output`)")
    digest = layout.digest()
    existing = _read_attrs(root)
    if existing:  # no attributes yet: a plate another process is creating right now
        theirs = (existing.get("vstain") or {}).get("layout")
        if theirs != digest:
            what = "another vstain layout" if theirs else "not a vstain plate"
            raise PlateError(f"{root}: exists and holds {what} (other fields, channels or sizes); "
                             "choose another output or remove it")
    root.mkdir(parents=True, exist_ok=True)
    group = _require_group(root)
    wanted = None if images is None else {(k[0], k[1], int(k[2])) for k in images}
    by_well: dict[str, list[PlateImage]] = {}
    for image in layout.images:
        by_well.setdefault(image.well, []).append(image)
    acquisitions = {m: i for i, m in enumerate(layout.magnifications)}
    for well, members in by_well.items():
        row, column = split_well(well)
        well_group = _require_group(root, f"{row}/{column}")
        well_group.attrs.put(_ngff("well", images=[
            {"path": layout.paths[im.key].rsplit("/", 1)[1], "acquisition": acquisitions[im.magnification]}
            for im in members]))
        for image in members:
            if wanted is None or image.key in wanted:
                _create_image(root / layout.paths[image.key], image)
    rows = sorted({split_well(w)[0] for w in layout.wells}, key=lambda r: (len(r), r.upper()))
    columns = sorted({split_well(w)[1] for w in layout.wells}, key=int)
    plate = _ngff(
        "plate", rows=rows, columns=columns,
        wells=[f"{split_well(w)[0]}/{split_well(w)[1]}" for w in layout.wells],
        acquisitions=[{"id": i, "name": m, "description": f"{m} fields"} for m, i in acquisitions.items()],
        field_count=max(len(m) for m in by_well.values()), name=layout.name,
    )
    # Written last: a plate whose root carries the layout digest has all its wells.
    group.attrs.put({**plate, "vstain": {"format": FORMAT, "version": VERSION, "layout": digest,
                                         "magnifications": layout.magnifications, **(attributes or {})}})


def _create_image(path: Path, image: PlateImage) -> None:
    """The field's image group and its array(s); an existing complete group is left alone."""
    import zarr

    record = _read_attrs(path)
    if record is not None and ((record.get("vstain") or {}).get("identity") == image.to_dict()):
        _require_array(path / LEVEL, (len(image.channels), *image.shape), "uint16")
        if image.mask is not None:
            _require_array(path / "labels" / MASK_LABEL / LEVEL, (1, *image.shape), image.mask_dtype)
        return
    _require_array(path / LEVEL, (len(image.channels), *image.shape), "uint16")
    group = zarr.open_group(path, mode="a", zarr_format=3)
    group.attrs.put({**_image_attrs(image), "vstain": {"format": FORMAT, "version": VERSION,
                                                       "identity": image.to_dict(), "complete": False}})
    if image.mask is not None:
        _require_array(path / "labels" / MASK_LABEL / LEVEL, (1, *image.shape), image.mask_dtype)
        labels = zarr.open_group(path / "labels", mode="a", zarr_format=3)
        labels.attrs.put(_ngff("labels", names=[MASK_LABEL]))
        label_group = zarr.open_group(path / "labels" / MASK_LABEL, mode="a", zarr_format=3)
        label_group.attrs.put(_ngff("image", image=image, label=True))


def _require_group(root: Path, path: str = "") -> zarr.Group:
    """Open the group at ``path`` under ``root``, creating it (and its parents) if absent; never overwrite.

    zarr's ``open_group(mode="a")`` and ``require_group`` look for the group, then create it only
    if no node is there: when another process (a ``torchrun`` rank writing the same plate) creates it
    between the two steps, zarr raises ``ContainsGroupError``. The group exists then, which is all
    this caller asked for (measured: 17 of 200 simultaneous two-process starts hit it).
    """
    import zarr
    from zarr.errors import ContainsGroupError

    try:
        return zarr.open_group(root, path=path, mode="a", zarr_format=3)
    except ContainsGroupError:
        return zarr.open_group(root, path=path, mode="r+", zarr_format=3)


def _require_array(path: Path, shape: tuple[int, ...], dtype: str) -> zarr.Array:
    """Open the array at ``path`` if it has this shape and dtype, create it if absent; never overwrite."""
    import zarr
    from zarr.codecs import BloscCodec
    from zarr.errors import ContainsArrayError

    if not (path / "zarr.json").is_file():
        try:
            return zarr.create_array(
                store=path, shape=shape, chunks=(1, *shape[1:]), dtype=dtype, fill_value=0,
                compressors=[BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
                dimension_names=("c", "y", "x"), zarr_format=3,
            )
        except (ContainsArrayError, FileExistsError):
            pass  # another process created it a moment ago: check it below
    array = zarr.open_array(path, mode="r+")
    if tuple(array.shape) != tuple(shape) or np.dtype(array.dtype) != np.dtype(dtype):
        raise PlateError(f"{path}: holds a {'x'.join(map(str, array.shape))} {array.dtype} array, "
                         f"expected {'x'.join(map(str, shape))} {dtype}; choose another output or remove it")
    return array


def _ngff(kind: Literal["plate", "well", "image", "labels"], **options: Any) -> dict[str, Any]:
    """NGFF 0.5 attributes of one group, made by ome-zarr-py's writer in memory."""
    import zarr
    from ome_zarr import writer
    from ome_zarr.format import FormatV05

    fmt = FormatV05()
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    if kind == "plate":
        writer.write_plate_metadata(group, options["rows"], options["columns"], options["wells"], fmt=fmt,
                                    acquisitions=options["acquisitions"], field_count=options["field_count"],
                                    name=options["name"])
    elif kind == "well":
        writer.write_well_metadata(group, options["images"], fmt=fmt)
    elif kind == "labels":
        group.attrs.put({"ome": {"version": fmt.version, "labels": list(options["names"])}})
    else:
        image: PlateImage = options["image"]
        label = options.get("label", False)
        size = PIXEL_SIZE_UM[image.magnification]
        axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"}]
        datasets = [{"path": LEVEL, "coordinateTransformations": [{"type": "scale", "scale": [1.0, size, size]}]}]
        if label:
            group.require_group("x")  # write_label_metadata writes into a child group
            writer.write_multiscales_metadata(group["x"], datasets, fmt=fmt, axes=axes, name=MASK_LABEL)
            writer.write_label_metadata(group, "x", fmt=fmt, source={"image": "../../"})
            return dict(group["x"].attrs)
        writer.write_multiscales_metadata(
            group, datasets, fmt=fmt, axes=axes, name=f"{image.well} F{image.field:03d} ({image.magnification})",
            metadata={"omero": {
                "name": f"{image.plate} {image.well} F{image.field:03d}",
                "channels": [{"label": label_, "color": _COLOURS.get(label_[:3], "FFFFFF"), "active": True,
                              "window": {"min": 0, "max": 65535, "start": 0, "end": 65535}}
                             for label_ in image.labels],
                "rdefs": {"model": "color"},
            }},
        )
    return dict(group.attrs)


def _image_attrs(image: PlateImage) -> dict[str, Any]:
    return _ngff("image", image=image)


def write_field(root: str | os.PathLike[str], layout: PlateLayout, key: Sequence[Any],
                planes: Iterable[tuple[str, np.ndarray]], *, mask: np.ndarray | None = None,
                record: Mapping[str, Any] | None = None) -> None:
    """Write a field's planes, one chunk each, then mark the field image complete.

    See :func:`write_image`; this looks the field's image up in ``layout``.
    """
    image = layout.image(key)
    write_image(Path(root) / layout.paths[image.key], image, planes, mask=mask, record=record)


def write_image(path: str | os.PathLike[str], image: PlateImage, planes: Iterable[tuple[str, np.ndarray]], *,
                mask: np.ndarray | None = None, record: Mapping[str, Any] | None = None) -> None:
    """Write the planes of the field image at ``path`` (created by :func:`create_plate`), then mark it complete.

    ``planes`` may be a generator of ``(channel label, plane)``, so one plane at a time is in
    memory. ``record`` is stored in the image's ``vstain`` attributes (e.g. which model made a
    prediction, the source TIFFs' descriptions).

    Raises
    ------
    PlateError
        If a plane has another size or dtype than the layout says, a channel is not in the
        image, or a channel of the image was not given.
    """
    import zarr

    path = Path(path)
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs)
    if attrs["vstain"].get("complete"):  # rewriting: not complete until every plane is new
        attrs["vstain"] = {**attrs["vstain"], "complete": False}
        group.attrs.put(attrs)
    array = zarr.open_array(path / LEVEL, mode="r+")
    positions = {label: i for i, label in enumerate(image.labels)}
    written = set()
    for label, plane in planes:
        if label not in positions:
            raise PlateError(f"{path}: no channel {label} in this plate (channels: {', '.join(image.labels)})")
        plane = np.asarray(plane)
        if plane.dtype != np.uint16 or plane.shape != image.shape:
            raise PlateError(f"{path}:{label}: {plane.dtype} {'x'.join(map(str, plane.shape))} plane, expected "
                             f"uint16 {'x'.join(map(str, image.shape))}")
        i = positions[label]
        array[i : i + 1] = plane[None]
        written.add(label)
    missing = [label for label in image.labels if label not in written]
    if missing:
        raise PlateError(f"{path}: channels {', '.join(missing)} were not given")
    if image.mask is not None:
        if mask is None:
            raise PlateError(f"{path}: the layout has a nucleus mask but none was given")
        labels = zarr.open_array(path / "labels" / MASK_LABEL / LEVEL, mode="r+")
        labels[0:1] = np.asarray(mask, dtype=image.mask_dtype)[None]
    attrs["vstain"] = {**attrs["vstain"], "complete": True, **({"record": dict(record)} if record else {})}
    group.attrs.put(attrs)


def image_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``vstain`` attributes of the field image at ``path`` (empty if it has none)."""
    return dict((_read_attrs(Path(path)) or {}).get("vstain") or {})


def extra_planes(field: Field) -> list[tuple[str, ZarrPlane]]:
    """The channels of a zarr field that are neither inputs nor stains (uncertainty maps), with their planes."""
    import zarr

    planes = [p for p in field.files if isinstance(p, ZarrPlane)]
    if not planes:
        return []
    image_dir, array_dir = planes[0].parent, planes[0].array
    attrs = _read_group_attrs(image_dir) or {}
    ome = attrs.get("ome", attrs)
    labels = [str(c.get("label", "")) for c in (ome.get("omero") or {}).get("channels", [])]
    names = dict(((attrs.get("vstain") or {}).get("identity") or {}).get("channels") or {})
    known = {p.channel for p in planes}
    array = zarr.open_array(array_dir, mode="r")
    lead = (0,) * (array.ndim - 3)
    extra = []
    for index, label in enumerate(labels):
        if _ALIASES.get(label, label) in known or label in known:
            continue
        if label.endswith(UNCERTAINTY_SUFFIX):
            base = label.removesuffix(UNCERTAINTY_SUFFIX)
            name = names.get(label) or _cv7000_name(field.plate, field.well, field.field, field.timepoint, base)
            extra.append((label, ZarrPlane(array=array_dir, index=index, channel=label, name=name,
                                           chunk=array.metadata.encode_chunk_key((*lead, index, 0, 0)))))
    return extra


def field_record(root: str | os.PathLike[str], layout: PlateLayout, key: Sequence[Any]) -> dict[str, Any] | None:
    """The ``vstain`` attributes of a field image if it is complete (all planes written), else None."""
    attrs = _read_attrs(Path(root) / layout.paths[layout.image(key).key])
    info = (attrs or {}).get("vstain") or {}
    return info if info.get("complete") else None


def _read_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of the zarr v3 group at ``path`` (read directly: cheap), or None if there is none."""
    try:
        document = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PlateError(f"{path / 'zarr.json'}: unreadable zarr metadata ({exc})") from None
    return dict(document.get("attributes") or {})


def remove_stale_parts(path: str | os.PathLike[str]) -> int:
    """Delete the temporaries (``*.partial``) a killed zarr write left under ``path``; returns how many."""
    removed = 0
    for folder, _, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------- reading
def read_plane(plane: ZarrPlane) -> np.ndarray:
    """The pixels of one plane as stored; raises :class:`PlateError` naming the plane if unreadable."""
    import zarr

    if not plane.chunk_path.is_file():
        raise PlateError(f"{plane}: plane never written (no chunk {plane.chunk}); rerun the job that writes it")
    try:
        array = zarr.open_array(plane.array, mode="r")
        return np.asarray(array[plane.index])
    except Exception as exc:  # zarr and its codecs raise many types for corrupt chunks
        raise PlateError(f"{plane}: unreadable chunk ({exc.__class__.__name__}: {exc})") from None


def index_hcs(
    root: str | os.PathLike[str],
    *,
    magnification: str | None = None,
    require: Literal["brightfield", "targets"] = "brightfield",
    check_headers: bool = True,
    check_pixels: bool = False,
) -> tuple[list[Field], list[PlateIssue]]:
    """The fields of an OME-Zarr HCS plate and the problems found (see :func:`vstain.plate.index.index_plate`).

    Problems are reported with the messages of TIFF folders where the problem is the same
    (missing planes or stains, dtype, size, unreadable pixel data); a well or field image that
    the plate lists but that is absent, an array that is not ``(c, y, x)`` uint16 with one chunk
    per plane, and a plane whose chunk was never written are reported as such.
    """
    import zarr

    from vstain.plate.index import PlateIssue

    root = Path(root)
    if not root.exists():
        raise PlateNotFound(f"{root}: no such folder")
    if not root.is_dir():
        raise PlateError(f"{root}: not a folder")
    try:
        group = zarr.open_group(root, mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:
        raise PlateError(f"{root}: not a readable zarr group ({exc.__class__.__name__}: {exc})") from None
    ome = attrs.get("ome", attrs)
    plate = ome.get("plate")
    if not isinstance(plate, dict):
        raise PlateError(f"{root}: a zarr group without NGFF plate metadata; not an OME-Zarr HCS plate")
    acquisitions = {a.get("id"): a.get("name") for a in plate.get("acquisitions") or []}
    issues: list[PlateIssue] = []
    fields: list[Field] = []
    bad_shapes: list[tuple[Field, tuple[int, int]]] = []
    for well_entry in plate.get("wells") or []:
        well_path = str(well_entry.get("path", ""))
        well = well_path.replace("/", "")
        well_dir = root / well_path
        well_attrs = _read_group_attrs(well_dir)
        if well_attrs is None:
            issues.append(PlateIssue(well_dir, f"well {well} is listed in the plate but missing"))
            continue
        images = (well_attrs.get("ome", well_attrs).get("well") or {}).get("images") or []
        numbers: dict[str, int] = {}
        for image_entry in images:
            image_dir = well_dir / str(image_entry.get("path"))
            mag = _image_magnification(image_dir, image_entry, acquisitions, magnification)
            numbers[mag or "?"] = numbers.get(mag or "?", 0) + 1
            found = _index_image(image_dir, well, numbers[mag or "?"], mag, plate.get("name"), require,
                                 check_headers, check_pixels, issues)
            if found is None or (magnification is not None and found.magnification != magnification):
                continue
            fields.append(found)
    if check_headers:
        # one size per magnification, as in a TIFF folder
        for mag in {f.magnification for f in fields}:
            shapes = [f.shape for f in fields if f.magnification == mag]
            common = max(set(shapes), key=shapes.count)
            for f in [f for f in fields if f.magnification == mag and f.shape != common]:
                issues.append(PlateIssue(next(iter(f.files)).parent,  # type: ignore[arg-type]
                                         f"size {'x'.join(map(str, f.shape))} differs from the plate's "
                                         f"{'x'.join(map(str, common))} ({mag})", field=f.key))
                bad_shapes.append((f, common))
        odd = {f.key for f, _ in bad_shapes}
        fields = [f for f in fields if f.key not in odd]
    if not fields and not issues:
        issues.append(PlateIssue(root, "no field images found in the plate"))
    return fields, issues


def _read_group_attrs(path: Path) -> dict[str, Any] | None:
    """Attributes of a v3 (``zarr.json``) or v2 (``.zattrs``) group, None if there is no group."""
    attrs = _read_attrs(path)
    if attrs is not None:
        return attrs
    try:
        return json.loads((path / ".zattrs").read_text(encoding="utf-8")) if (path / ".zgroup").is_file() else None
    except (OSError, ValueError) as exc:
        raise PlateError(f"{path / '.zattrs'}: unreadable zarr metadata ({exc})") from None


def _image_magnification(image_dir: Path, entry: Mapping[str, Any], acquisitions: Mapping[Any, Any],
                         asked: str | None) -> str | None:
    attrs = _read_group_attrs(image_dir) or {}
    identity = (attrs.get("vstain") or {}).get("identity") or {}
    if identity.get("magnification") in MAGNIFICATIONS:
        return identity["magnification"]
    named = acquisitions.get(entry.get("acquisition"))
    if named in MAGNIFICATIONS:
        return str(named)
    return asked


def _index_image(image_dir: Path, well: str, number: int, magnification: str | None, plate_name: Any,
                 require: str, check_headers: bool, check_pixels: bool, issues: list) -> Field | None:
    """One field image as a Field, or None (with the reason in ``issues``)."""
    import zarr

    from vstain.plate.index import Field, PlateIssue

    attrs = _read_group_attrs(image_dir)
    if attrs is None:
        issues.append(PlateIssue(image_dir, f"field image {image_dir.name} is listed in well {well} but missing"))
        return None
    ome = attrs.get("ome", attrs)
    info = attrs.get("vstain") or {}
    identity = info.get("identity") or {}
    if magnification is None:
        issues.append(PlateIssue(image_dir, "magnification unknown (no vstain identity, no acquisition named "
                                 f"{'/'.join(MAGNIFICATIONS)}); give the magnification"))
        return None
    number = int(identity.get("field", number))
    key = (magnification, well, number)
    if info and info.get("complete") is False:
        issues.append(PlateIssue(image_dir, f"field {well} F{number:03d} was never completely written; "
                                 "rerun the job that wrote the plate", field=key))
        return None
    try:
        multiscales = ome["multiscales"][0]
        level = str(multiscales["datasets"][0]["path"])
        axes = [a["name"] if isinstance(a, dict) else a for a in multiscales.get("axes", [])]
    except (KeyError, IndexError, TypeError):
        issues.append(PlateIssue(image_dir, "no NGFF multiscales metadata; not an image", field=key))
        return None
    labels = [str(c.get("label", "")) for c in (ome.get("omero") or {}).get("channels", [])]
    try:
        array = zarr.open_array(image_dir / level, mode="r")
    except Exception as exc:
        issues.append(PlateIssue(image_dir / level, f"unreadable array ({exc.__class__.__name__}: {exc})", field=key))
        return None
    shape = tuple(array.shape)
    problem = None
    if axes[-3:] != ["c", "y", "x"] or any(n != 1 for n in shape[:-3]):
        problem = f"axes {','.join(axes)} {shape}: expected (c, y, x) (other leading axes of size 1)"
    elif np.dtype(array.dtype) != np.uint16:
        problem = f"{array.dtype} data; CV7000 images are uint16"
    elif tuple(array.chunks[-3:]) != (1, *shape[-2:]):
        problem = f"chunks {array.chunks}: expected one chunk per plane {(1, *shape[-2:])}"
    elif len(labels) != shape[-3]:
        problem = f"{len(labels)} channel labels (omero) for {shape[-3]} channels"
    if problem:
        issues.append(PlateIssue(image_dir / level, problem, field=key))
        return None
    lead = (0,) * (len(shape) - 3)
    plate_id = str(identity.get("plate") or _plate_id(plate_name))
    timepoint = int(identity.get("timepoint", 1))
    names = dict(identity.get("channels") or {})
    by_channel: dict[str, ZarrPlane] = {}
    for index, label in enumerate(labels):
        canonical = _ALIASES.get(label, label)
        if canonical not in CHANNEL_LABELS:
            continue  # e.g. uncertainty maps: not an input or a target
        if canonical in by_channel:
            issues.append(PlateIssue(image_dir / level, f"channel {canonical} twice; keep one", field=key))
            return None
        name = names.get(label) or _cv7000_name(plate_id, well, number, timepoint, canonical)
        chunk = array.metadata.encode_chunk_key((*lead, index, 0, 0))
        by_channel[canonical] = ZarrPlane(array=image_dir / level, index=index, channel=canonical, name=name,
                                          chunk=chunk)
    planes = [by_channel.get(label) for label in BRIGHTFIELD_LABELS]
    targets = {CHANNEL_NAME_TARGETS[c]: by_channel[c] for c in TARGET_CHANNEL_NAMES if c in by_channel}
    # the planes this job reads must have been written (a missing chunk reads as zeros)
    needed = list(targets.values()) if require == "targets" else [p for p in planes if p is not None]
    bad = False
    for plane in needed:
        if not plane.chunk_path.is_file():
            issues.append(PlateIssue(image_dir / level, f"{plane.channel} ({plane.name}) never written: no chunk "
                                     f"{plane.chunk}", field=key))
            bad = True
        elif check_pixels:
            try:
                read_plane(plane)
            except PlateError as exc:
                issues.append(PlateIssue(image_dir / level, str(exc).removeprefix(f"{plane}: ").replace(
                    "unreadable chunk", f"{plane.channel}: pixel data unreadable", 1), field=key))
                bad = True
    if bad:
        return None
    if require == "targets":
        absent = [t for t in TARGETS if t not in targets]
        if absent:
            missing = ", ".join(f"C{TARGETS.index(t) + 1:02d} ({t})" for t in absent)
            issues.append(PlateIssue(image_dir, f"field {well} F{number:03d} lacks {missing}; left out",
                                     severity="warning", field=key))
            return None
        brightfield: tuple = ()
    else:
        present = [p for p in planes if p is not None]
        if not present:
            if targets:
                issues.append(PlateIssue(image_dir, f"field {well} F{number:03d} has no brightfield (C04) planes",
                                         field=key))
            return None
        if len(present) < len(PLANES):
            missing = ", ".join(label for label, p in zip(BRIGHTFIELD_LABELS, planes) if p is None)
            issues.append(PlateIssue(image_dir, f"field {well} F{number:03d} lacks brightfield plane(s) {missing}",
                                     field=key))
            return None
        brightfield = tuple(planes)
    mask = None
    mask_info = identity.get("mask")
    mask_dir = image_dir / "labels" / MASK_LABEL / LEVEL
    if (mask_dir / "zarr.json").is_file():
        mask_array = zarr.open_array(mask_dir, mode="r")
        mask = ZarrPlane(array=mask_dir, index=0, channel=MASK_LABEL,
                         name=(mask_info or {}).get("file") or _cv7000_name(plate_id, well, number, timepoint, "C01"),
                         chunk=mask_array.metadata.encode_chunk_key((0, 0, 0)))
        if not mask.chunk_path.is_file():
            issues.append(PlateIssue(mask_dir, "nucleus mask never written (no chunk); left out",
                                     severity="warning", field=key))
            mask = None
        elif tuple(mask_array.shape[-2:]) != tuple(shape[-2:]):
            issues.append(PlateIssue(mask_dir, f"mask size {'x'.join(map(str, mask_array.shape[-2:]))} differs "
                                     f"from its field's {'x'.join(map(str, shape[-2:]))}", field=key))
            mask = None
    return Field(plate=plate_id, well=well, field=number, magnification=magnification, brightfield=brightfield,
                 targets=targets, mask=mask, shape=tuple(shape[-2:]), timepoint=timepoint)  # type: ignore[arg-type]


def _plate_id(name: Any) -> str:
    """A CV7000 plate id from an NGFF plate name (path separators and blanks replaced)."""
    text = re.sub(r"[\\/\s]+", "_", str(name or "plate")).strip("_") or "plate"
    return text if text.isprintable() else "plate"


def _cv7000_name(plate: str, well: str, field: int, timepoint: int, label: str) -> str:
    """The CV7000 file name of channel ``label`` (``C02`` or ``C04Z03``) of a field."""
    channel = int(label[1:3])
    z = int(label[4:6]) if len(label) == 6 else 1
    base = ImageName(plate=plate, well=well, field=field, channel=BRIGHTFIELD_CHANNEL, timepoint=timepoint)
    return format_name(base.for_channel(channel, z=z))

