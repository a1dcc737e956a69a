"""``vstain convert``: a CV7000 TIFF plate to an OME-Zarr HCS plate and back, losslessly.

Pixels are copied bit for bit (uint16, lossless compression); plate id, wells, field numbers,
time points, magnifications and every file name are kept (:mod:`vstain.plate.omezarr`), and so
are nucleus masks and the TIFF descriptions that say which model made a prediction. Fields are
converted on a Dask cluster (:mod:`vstain.plate.jobs`), one field per task, one plane in memory
at a time; each field is marked done as soon as it is written, so a killed conversion rerun
converts only the fields not done yet. The source is never written to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from vstain.errors import ConfigError, PlateError
from vstain.plate.images import ZarrPlane, read_image
from vstain.plate.index import Field, PlateIndex, index_plate
from vstain.plate.jobs import ClusterOptions, map_fields, open_client
from vstain.plate.omezarr import (
    BRIGHTFIELD_LABELS,
    PlateImage,
    create_plate,
    extra_planes,
    image_record,
    is_hcs_plate,
    remove_stale_parts,
    source_layout,
    write_image,
)
from vstain.plate.tiff import tiff_description, write_tiff
from vstain.vocabulary import CHANNEL_NAME_TARGETS, TARGET_CHANNEL_NAMES

Target = Literal["ome-zarr", "cv7000"]
UNCERTAINTY_DIR = "uncertainty"


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert_plate` did."""

    output: Path
    fields: int
    converted: int
    skipped: int
    bytes_read: int


def source_index(plate: str | os.PathLike[str], *, magnification: str | None = None) -> PlateIndex:
    """The fields of a plate to convert: with brightfield, or (a folder of predictions) stains only."""
    index = index_plate(plate, magnification=magnification)
    if not index.fields:
        stains = index_plate(plate, magnification=magnification, require="targets")
        if stains.fields:
            return stains
    return index


def convert_plate(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    to: Target | None = None,
    magnification: str | None = None,
    skip_invalid: bool = False,
    cluster: ClusterOptions | None = None,
    progress: bool = False,
    announce: Callable[[str], None] | None = None,
) -> ConvertReport:
    """Convert ``source`` (a CV7000 folder or an OME-Zarr plate) into ``output`` in the other format.

    Parameters
    ----------
    source
        The plate to read (either format; never modified).
    output
        ``*.ome.zarr`` folder (``to="ome-zarr"``) or a folder that gets ``<mag>_images/`` folders
        and ``masks/`` (``to="cv7000"``).
    to
        The output format; default: the other one than ``source``'s.
    magnification
        Convert only this magnification (required for a flat TIFF folder).
    skip_invalid
        Convert the valid fields of a plate with errors (default: refuse, naming the first).
    cluster
        Where the fields are converted (default: one local worker).
    progress, announce
        Progress bar over fields; receiver of the cluster's description line.

    Raises
    ------
    PlateError
        If the plate has errors (unless ``skip_invalid``), ``output`` is inside ``source``, or
        ``output`` holds another plate.
    """
    source, output = Path(source), Path(output)
    from_zarr = is_hcs_plate(source)
    to = to or ("cv7000" if from_zarr else "ome-zarr")
    if to not in ("ome-zarr", "cv7000"):
        raise ConfigError(f"unknown output format {to!r} (`to`); choose ome-zarr or cv7000")
    if (to == "ome-zarr") == from_zarr:
        raise ConfigError(f"{source}: is already {'an OME-Zarr plate' if from_zarr else 'a CV7000 folder'}; "
                          f"converting it to {to} changes nothing (`to`)")
    out_resolved, src_resolved = output.resolve(), source.resolve()
    if out_resolved == src_resolved or out_resolved.is_relative_to(src_resolved):
        raise PlateError(f"{output}: lies inside the plate {source}; choose an output outside it (`output`)")
    index = source_index(source, magnification=magnification)
    if index.errors and not skip_invalid:
        index.raise_for_errors()
    fields = index.fields
    if not fields:
        index.raise_for_errors()
        raise PlateError(f"{source}: no fields to convert")
    bytes_read = sum(2 * f.shape[0] * f.shape[1] * len(f.files) for f in fields if f.shape)
    with open_client(cluster or ClusterOptions(), announce=announce) as client:
        if to == "ome-zarr":
            layout = source_layout(fields, name=_plate_name(fields))
            create_plate(output, layout, attributes={"source": str(src_resolved)})
            remove_stale_parts(output)
            todo = [f for f in fields if not image_record(output / layout.paths[f.key]).get("complete")]
            jobs = [(f, str(output / layout.paths[f.key]), layout.image(f.key)) for f in todo]
            map_fields(client, _field_to_zarr, jobs, label=lambda job: job[0].label, on_result=lambda *_: None,
                       progress=progress, desc="convert")
        else:
            output.mkdir(parents=True, exist_ok=True)
            todo = [f for f in fields if not all(p.is_file() for p in _tiff_paths(f, output).values())]
            from vstain.atomic import remove_stale_parts as remove_stale_tiffs

            for folder, names in _folders(todo, output).items():
                remove_stale_tiffs(folder, names)
            map_fields(client, _field_to_cv7000, todo, label=lambda f: f.label, on_result=lambda *_: None,
                       arguments=(str(output),), progress=progress, desc="convert")
    return ConvertReport(output=output, fields=len(fields), converted=len(todo), skipped=len(fields) - len(todo),
                         bytes_read=bytes_read)


def _plate_name(fields: list[Field]) -> str:
    ids = sorted({f.plate for f in fields})
    return ids[0] if len(ids) == 1 else " + ".join(ids)


def _field_to_zarr(job: tuple[Field, str, PlateImage]) -> None:
    """Write one field into its zarr image, one plane in memory at a time (runs on a worker)."""
    field, path, image = job
    locations = {**{c: field.targets[CHANNEL_NAME_TARGETS[c]] for c in TARGET_CHANNEL_NAMES
                    if CHANNEL_NAME_TARGETS[c] in field.targets},
                 **dict(zip(BRIGHTFIELD_LABELS, field.brightfield))}
    descriptions = {}
    for label, location in locations.items():
        text = tiff_description(location) if isinstance(location, Path) else None
        if text and not _is_shape_note(text):  # keep what a writer said (e.g. which model), not tifffile's note
            descriptions[label] = text
    write_image(path, image, ((label, read_image(locations[label])) for label in image.labels),
                mask=field.read_mask(), record={"descriptions": descriptions} if descriptions else None)


def _is_shape_note(text: str) -> bool:
    try:
        return set(json.loads(text)) == {"shape"}
    except (ValueError, TypeError):
        return False


def _tiff_paths(field: Field, output: Path) -> dict[str, Path]:
    """Where each image of a zarr field goes in the CV7000 layout (``<mag>_images/``, ``masks/``)."""
    folder = output / f"{field.magnification}_images"
    paths: dict[str, Path] = {}
    for location in field.files:
        paths[getattr(location, "channel", location.name)] = folder / location.name
    for label, plane in extra_planes(field):
        paths[label] = folder / UNCERTAINTY_DIR / plane.name
    if field.mask is not None:
        paths["mask"] = output / "masks" / f"{field.magnification}_images" / field.mask.name
    return paths


def _folders(fields: list[Field], output: Path) -> dict[Path, list[str]]:
    folders: dict[Path, list[str]] = {}
    for f in fields:
        for path in _tiff_paths(f, output).values():
            folders.setdefault(path.parent, []).append(path.name)
    return folders


def _field_to_cv7000(field: Field, output: str) -> None:
    """Write one zarr field as CV7000 TIFFs, one plane at a time (runs on a worker)."""
    paths = _tiff_paths(field, Path(output))
    record = image_record(next(iter(field.files)).parent) if field.files else {}
    descriptions: dict[str, Any] = dict((record.get("record") or {}).get("descriptions") or {})
    planes: list[ZarrPlane] = [p for p in field.files if isinstance(p, ZarrPlane)]
    planes += [plane for _, plane in extra_planes(field)]
    for plane in planes:
        write_tiff(paths[plane.channel], plane.read(), description=descriptions.get(plane.channel))
    if field.mask is not None:
        import numpy as np

        mask = field.read_mask()
        target = paths["mask"]
        if mask.dtype == np.uint16:
            write_tiff(target, mask)
        else:  # masks of another integer type are written as they are, atomically
            import tifffile

            from vstain.atomic import atomic_path

            with atomic_path(target) as tmp:
                tifffile.imwrite(tmp, mask, photometric="minisblack")
