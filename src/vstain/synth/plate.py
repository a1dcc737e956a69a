"""Write a synthetic plate to disk in the CV7000 challenge layout, with masks and a manifest.

::

    DIR/<mag>_images/<plate>_<well>_T0001F001L01A01Z01C01.tif ... A04Z07C04.tif   (10 per field)
    DIR/masks/<mag>_images/<plate>_<well>_T0001F001L01A01Z01C01.tif               (nucleus labels)
    DIR/plate.json                                                                 (seed, parameters, per-field facts)

Every field has its own random stream derived from ``(seed, magnification, well, field)``, so a
field does not change when more wells or fields are asked for, and the same arguments give
byte-identical files.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vstain.atomic import write_text_atomic
from vstain.errors import ConfigError, PlateError
from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff
from vstain.synth.field import RenderedField, field_shape, render_field
from vstain.synth.misregistration import shift_overrides
from vstain.synth.parameters import MAX_SHIFT_PX, SynthParameters, max_shift_reach_px
from vstain.synth.randomize import randomized_parameters
from vstain.vocabulary import BRIGHTFIELD_CHANNEL, MAGNIFICATIONS, PLANES, TARGET_CHANNELS, check_magnification

DEFAULT_PLATE_ID = "AssayPlate_Greiner_#655090"
MANIFEST = "plate.json"
_ROWS = "BCDEFG"
_COLUMNS = range(2, 12)


def well_names(count: int) -> list[str]:
    """The first ``count`` inner wells of a 96-well plate, row by row: B02, B03, ..., B11, C02, ..."""
    capacity = len(_ROWS) * len(_COLUMNS)
    if not 1 <= count <= capacity:
        raise ConfigError(f"`wells`: {count} is out of range; a synthetic plate has 1 to {capacity} wells")
    return [f"{_ROWS[i // len(_COLUMNS)]}{_COLUMNS[i % len(_COLUMNS)]:02d}" for i in range(count)]


def field_seed(seed: int, magnification: str, well: str, field: int) -> np.random.SeedSequence:
    """The random stream of one field: independent of how many wells or fields the plate has."""
    row = _ROWS.index(well[0]) if well[0] in _ROWS else ord(well[0])
    return np.random.SeedSequence([seed, MAGNIFICATIONS.index(magnification), row, int(well[1:]), field])


def field_files(plate_id: str, well: str, field: int) -> dict[str, str]:
    """File names of one field: ``{"C01": ..., "C02": ..., "C03": ..., "Z01": ... "Z07": ...}``."""
    base = ImageName(plate=plate_id, well=well, field=field, channel=1)
    names = {f"C{c:02d}": format_name(base.for_channel(c)) for c in sorted(TARGET_CHANNELS.values())}
    names.update({f"Z{z:02d}": format_name(base.for_channel(BRIGHTFIELD_CHANNEL, z=z)) for z in PLANES})
    return names


def holds_plate(folder: Path) -> bool:
    """True if ``folder`` already has a plate (a manifest, an image folder or masks)."""
    if not folder.is_dir():
        return False
    return (folder / MANIFEST).exists() or (folder / "masks").exists() or any(
        (folder / f"{m}_images").exists() for m in MAGNIFICATIONS
    )


def generate_plate(
    out: str | os.PathLike[str],
    *,
    magnification: str | Sequence[str] = "20x",
    wells: int = 2,
    fields: int = 3,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    plate_id: str = DEFAULT_PLATE_ID,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    preset: str | None = None,
    randomize: int | None = None,
    max_shift_px: float | None = None,
) -> Path:
    """Render and write a synthetic plate; return the path of its ``plate.json``.

    Parameters
    ----------
    out
        Plate folder to create (or reuse with ``overwrite``).
    magnification
        One magnification or several (each gets its own ``<mag>_images`` folder).
    wells, fields
        Number of wells (B02, B03, ...) and fields per well (F001, ...).
    seed
        Seed of every random draw; the same arguments give byte-identical files.
    size
        ``(rows, cols)`` of each field; default the real full-field size.
    plate_id
        Plate name in the file names (the challenge pipelines need ``655090_`` in it).
    overwrite
        Replace an existing plate in ``out`` (files listed in its manifest are removed first).
    overrides
        :class:`SynthParameters` fields to change, applied at every magnification (last).
    progress
        Called with one line per field written.
    preset
        A named variant (:data:`vstain.synth.presets.PRESETS`); default ``reference``.
    randomize
        Variant seed: draw the parameters with :func:`vstain.synth.randomize.randomized_parameters`
        (independent of ``seed``, which draws the specimen and noise). Not with ``preset``.
    max_shift_px
        Shift the stains against the brightfield by up to this many pixels per axis
        (:func:`vstain.synth.misregistration.shift_overrides`, drawn from ``randomize`` if given,
        else from ``seed``); replaces the preset's or randomisation's shifts. 0 aligns them.
        Default: the preset's shifts (none for ``reference``).

    Raises
    ------
    PlateError
        If ``out`` already holds a plate and ``overwrite`` is False.
    ConfigError
        If ``wells`` or ``fields`` is out of range, the preset or a parameter is unknown, or both
        ``preset`` and ``randomize`` are given.
    """
    root = Path(out)
    mags = [magnification] if isinstance(magnification, str) else list(dict.fromkeys(magnification))
    for mag in mags:
        check_magnification(mag)
    if not 1 <= fields <= 999:
        raise ConfigError(f"`fields`: {fields} is out of range; use 1 to 999 fields per well")
    well_list = well_names(wells)
    ImageName(plate=plate_id, well="B02", field=1, channel=1)  # validates the plate id early
    # Resolve (and so check) the parameters before anything on disk changes.
    params = {m: plate_parameters(m, preset=preset, randomize=randomize, max_shift_px=max_shift_px, seed=seed,
                                  overrides=overrides) for m in mags}
    for mag, p in params.items():
        if max_shift_reach_px(p, field_shape(mag, size)) > MAX_SHIFT_PX:
            raise ConfigError(f"{mag}: the shifts would exceed {MAX_SHIFT_PX:g} px at the field corners; "
                              "use a smaller shift_scale or field size")
    if holds_plate(root):
        if not overwrite:
            raise PlateError(f"{root}: already holds a plate; choose another `root` or pass `overwrite`")
        _remove_previous(root)

    manifest_fields = []
    for mag in mags:
        images = root / f"{mag}_images"
        masks = root / "masks" / f"{mag}_images"
        for well in well_list:
            for number in range(1, fields + 1):
                sequence = field_seed(seed, mag, well, number)
                started = time.perf_counter()
                rendered = render_field(magnification=mag, seed=sequence, size=size, params=params[mag], site=number)
                names = field_files(plate_id, well, number)
                _write_field(rendered, names, images, masks)
                manifest_fields.append({
                    "magnification": mag, "well": well, "field": f"F{number:03d}",
                    "seed_entropy": [int(e) for e in np.atleast_1d(sequence.entropy)],
                    "files": [f"{mag}_images/{n}" for n in names.values()],
                    "mask": f"masks/{mag}_images/{names['C01']}",
                    **rendered.manifest(),
                })
                if progress:
                    progress(f"{mag} {well} F{number:03d}: {rendered.n_nuclei} nuclei "
                             f"({time.perf_counter() - started:.1f} s)")

    from vstain import __version__

    manifest = {
        "generator": "vstain.synth",
        "vstain_version": __version__,
        "plate_id": plate_id,
        "seed": seed,
        "preset": None if randomize is not None else (preset or "reference"),
        "randomize_seed": randomize,
        "max_shift_px": max_shift_px,
        "magnifications": mags,
        "wells": well_list,
        "fields_per_well": fields,
        "size": {m: list(field_shape(m, size)) for m in mags},
        "shift_convention": "per field, shift_px = {channel: [dy, dx]} at the field centre c and shift_scale = s: "
                            "a structure at brightfield pixel p = (y, x) is at that channel's pixel "
                            "c + (1 + s) * (p - c) - [dy, dx], i.e. (y - dy, x - dx) when s = 0; "
                            "the nucleus masks follow C01",
        "parameters": {m: p.to_dict() for m, p in params.items()},
        "fields": manifest_fields,
    }
    path = root / MANIFEST
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return path


def plate_parameters(
    magnification: str,
    *,
    preset: str | None = None,
    randomize: int | None = None,
    max_shift_px: float | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> SynthParameters:
    """The parameters :func:`generate_plate` renders ``magnification`` with (same arguments).

    Order: the magnification's reference, then ``preset`` or the ``randomize`` draw, then the
    shifts of ``max_shift_px``, then ``overrides``.
    """
    if preset is not None and randomize is not None:
        raise ConfigError("choose either `preset` or `randomize`, not both")
    if max_shift_px is not None and not 0 <= max_shift_px <= MAX_SHIFT_PX:
        raise ConfigError(f"`max_shift_px`: {max_shift_px} is out of range; use 0 to {MAX_SHIFT_PX:g} px")
    if randomize is not None:
        base = randomized_parameters(magnification, randomize).to_dict()
    else:
        base = SynthParameters.for_magnification(magnification, preset=preset).to_dict()
    if max_shift_px is not None:
        shift_seed = randomize if randomize is not None else seed
        rng = np.random.default_rng(np.random.SeedSequence([int(shift_seed), MAGNIFICATIONS.index(magnification),
                                                            zlib.crc32(b"max_shift_px")]))
        base.update(shift_overrides(max_shift_px, rng))
    base.update(overrides or {})
    return SynthParameters.from_dict(base)


def _write_field(rendered: RenderedField, names: dict[str, str], images: Path, masks: Path) -> None:
    for target, channel in TARGET_CHANNELS.items():
        write_tiff(images / names[f"C{channel:02d}"], rendered.targets[target])
    for z, plane in zip(PLANES, rendered.brightfield):
        write_tiff(images / names[f"Z{z:02d}"], plane)
    write_tiff(masks / names["C01"], rendered.labels)


def _remove_previous(root: Path) -> None:
    """Remove the files a previous synthetic plate listed in its manifest (and nothing else)."""
    manifest = root / MANIFEST
    if not manifest.exists():
        return
    try:
        previous = json.loads(manifest.read_text())
        listed = [p for f in previous.get("fields", []) for p in (*f.get("files", []), f.get("mask"))]
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise PlateError(f"{manifest}: unreadable manifest ({exc}); remove the folder by hand") from None
    resolved_root = root.resolve()
    for relative in listed:
        if not relative:
            continue
        path = (root / relative).resolve()
        if resolved_root in path.parents:
            path.unlink(missing_ok=True)
    manifest.unlink()
