"""Index a plate into fields of view and validate what is there.

Three layouts are accepted:

* ``<root>/<mag>_images/*.tif`` (the challenge layout; magnification from the folder name), also
  when ``root`` is itself a ``<mag>_images`` folder;
* a flat folder of images, with the magnification given by the caller;
* an OME-Zarr HCS plate (``*.ome.zarr``, :mod:`vstain.plate.omezarr`): its fields' images are
  planes of zarr arrays (:class:`~vstain.plate.images.ZarrPlane`) instead of TIFF files, read
  through the same :class:`Field` methods.

Only image folders are listed (never recursively), so ``masks/`` and caches are never taken for
images. Every problem is reported once, naming the file, as a :class:`PlateIssue`; fields with an
error are left out of :attr:`PlateIndex.fields`.

What makes a field depends on the job (``require``): training and inference need the 7
brightfield planes (targets optional); the evaluation needs the three stains and ignores
brightfield, so a folder of predictions, which has no brightfield, indexes too.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field as dataclass_field, replace
from pathlib import Path
from typing import Iterable, Literal, Mapping

import numpy as np

from vstain.errors import InvalidName, PlateError, PlateNotFound
from vstain.plate.images import ImageLocation, read_image
from vstain.plate.naming import ImageName, format_name, parse_name
from vstain.plate.tiff import read_tiff, tiff_header
from vstain.vocabulary import (
    BRIGHTFIELD_CHANNEL,
    CHANNEL_TARGETS,
    MAGNIFICATIONS,
    PLANES,
    TARGET_CHANNELS,
    TARGETS,
    check_magnification,
    magnification_folder_pattern,
)

_MAG_DIR = magnification_folder_pattern()
_TIFF_SUFFIXES = (".tif", ".tiff")

FieldKey = tuple[str, str, int]
"""(magnification, well, field number): the identity of a field of view."""

Require = Literal["brightfield", "targets"]
"""What a field must have to be indexed: its 7 brightfield planes, or its three target stains."""


@dataclass(frozen=True)
class PlateIssue:
    """One problem found while indexing, tied to the file (or folder) it concerns."""

    path: Path
    message: str
    severity: Literal["error", "warning"] = "error"
    #: The field the file belongs to, when its name says (None for folders and foreign names).
    field: FieldKey | None = None

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass(frozen=True)
class Field:
    """One field of view: its 7 brightfield planes and whichever targets exist.

    In an index built with ``require="targets"`` brightfield is not read and
    :attr:`brightfield` is empty.
    """

    plate: str
    well: str
    field: int
    magnification: str
    brightfield: tuple[ImageLocation, ...]
    targets: Mapping[str, ImageLocation] = dataclass_field(default_factory=dict)
    mask: ImageLocation | None = None
    shape: tuple[int, int] | None = None
    timepoint: int = 1

    @property
    def key(self) -> FieldKey:
        """``(magnification, well, field)``."""
        return (self.magnification, self.well, self.field)

    @property
    def label(self) -> str:
        """Short human-readable id, e.g. ``20x D02 F007``."""
        return f"{self.magnification} {self.well} F{self.field:03d}"

    @property
    def files(self) -> tuple[ImageLocation, ...]:
        """The field's images (TIFF files or zarr planes): brightfield planes, then targets."""
        return (*self.brightfield, *self.targets.values())

    def signature(self) -> str:
        """The names, sizes and modification times of :attr:`files` (JSON): a result saved for the
        field is reused only while this is unchanged.
        """
        import json

        return json.dumps([[str(p.name), (s := p.stat()).st_size, s.st_mtime_ns] for p in self.files])

    def has_targets(self, targets: Iterable[str] = TARGETS) -> bool:
        """True if every stain in ``targets`` has a file."""
        return all(t in self.targets for t in targets)

    def brightfield_name(self) -> ImageName:
        """Parsed name of the Z01 brightfield plane (derived from a target's name if brightfield was not indexed)."""
        if self.brightfield:
            return parse_name(self.brightfield[0].name)
        return parse_name(next(iter(self.targets.values())).name).for_channel(BRIGHTFIELD_CHANNEL)

    def target_filename(self, target: str) -> str:
        """File name the CV7000 would give ``target`` of this field, derived from the brightfield name."""
        channel = TARGET_CHANNELS[target]
        return format_name(self.brightfield_name().for_channel(channel))

    def read_brightfield(self) -> np.ndarray:
        """The z-stack as a ``(7, H, W)`` array in the stored dtype (uint16)."""
        if not self.brightfield:
            raise PlateError(f"{self.label}: brightfield was not indexed (index_plate(..., require='targets'))")
        return np.stack([read_image(p) for p in self.brightfield])

    def read_target(self, target: str) -> np.ndarray:
        """One fluorescence target as ``(H, W)``; raises :class:`PlateError` if absent."""
        if target not in self.targets:
            raise PlateError(f"{self.label}: no {target} image ({self.target_filename(target)}) in the plate")
        return read_image(self.targets[target])

    def read_mask(self) -> np.ndarray | None:
        """The nucleus label image from ``masks/``, or None if there is none."""
        return None if self.mask is None else read_image(self.mask)


def field_identity(field: Field) -> str:
    """A field's identity across plates and runs: ``<acquisition plate>/<magnification>/<well>/F<nnn>``.

    The acquisition plate is the name the instrument wrote into the file names, so the identity
    survives copying or converting the plate. Model bundles list their training fields this way.
    """
    return f"{field.plate}/{field.magnification}/{field.well}/F{field.field:03d}"


@dataclass
class PlateIndex:
    """Fields of a plate folder, with every issue found while indexing."""

    root: Path
    fields: list[Field]
    issues: list[PlateIssue]

    @property
    def errors(self) -> list[PlateIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def magnifications(self) -> list[str]:
        return sorted({f.magnification for f in self.fields}, key=MAGNIFICATIONS.index)

    def select(
        self,
        *,
        magnification: str | None = None,
        keys: Iterable[FieldKey] | None = None,
        with_targets: Iterable[str] | None = None,
    ) -> list[Field]:
        """Fields matching every given criterion, in index order."""
        chosen = self.fields
        if magnification is not None:
            chosen = [f for f in chosen if f.magnification == magnification]
        if keys is not None:
            wanted = set(keys)
            chosen = [f for f in chosen if f.key in wanted]
        if with_targets is not None:
            needed = tuple(with_targets)
            chosen = [f for f in chosen if f.has_targets(needed)]
        return chosen

    def unusable_fields(self) -> dict[FieldKey, list[PlateIssue]]:
        """Fields named by the folder's files but left out of :attr:`fields`, with the errors why.

        A field with a missing, unreadable, non-uint16 or odd-sized brightfield plane, or with a
        duplicate file, is not in :attr:`fields`; this is where such fields are still visible
        (e.g. so that ``vstain predict`` can refuse to skip them silently).
        """
        valid = {f.key for f in self.fields}
        unusable: dict[FieldKey, list[PlateIssue]] = {}
        for issue in self.errors:
            if issue.field is not None and issue.field not in valid:
                unusable.setdefault(issue.field, []).append(issue)
        return unusable

    def raise_for_errors(self) -> None:
        """Raise :class:`PlateError` with the first error (and how many more) if there are any."""
        errors = self.errors
        if errors:
            more = f" (and {len(errors) - 1} more problems; run `vstain check {self.root}`)" if len(errors) > 1 else ""
            raise PlateError(f"{errors[0].path}: {errors[0].message}{more}")

    def summary(self) -> "pd.DataFrame":  # noqa: F821 - pandas imported lazily
        """One row per field: what is present (for ``vstain check``)."""
        import pandas as pd

        rows = [
            {
                "magnification": f.magnification,
                "well": f.well,
                "field": f"F{f.field:03d}",
                "brightfield": f"{len(f.brightfield)}/7",
                **{t: ("yes" if t in f.targets else "-") for t in TARGETS},
                "mask": "yes" if f.mask is not None else "-",
                "size": "x".join(map(str, f.shape)) if f.shape else "?",
            }
            for f in self.fields
        ]
        return pd.DataFrame(rows)


def image_folders(root: str | os.PathLike[str], magnification: str | None = None) -> list[tuple[str, Path]]:
    """The ``(magnification, folder)`` pairs of a plate root, by layout (see module docstring)."""
    root = Path(root)
    try:
        exists, is_folder = root.exists(), root.is_dir()
    except OSError as exc:  # e.g. a parent folder without search permission
        raise PlateError(f"{root}: cannot be read ({exc.strerror}); check the permissions of its folders") from None
    if not exists:
        raise PlateNotFound(f"{root}: no such folder")
    if not is_folder:
        raise PlateError(f"{root}: not a folder")
    if magnification is not None:
        try:
            check_magnification(magnification)
        except ValueError as exc:
            raise PlateError(f"{root}: {exc}") from None
    own = _MAG_DIR.match(root.name)
    if own:
        if magnification not in (None, own.group(1)):
            raise PlateError(f"{root}: folder name says {own.group(1)} but `magnification` is {magnification}")
        return [(own.group(1), root)]
    try:
        subdirs = sorted(
            (m.group(1), Path(e.path)) for e in os.scandir(root) if (m := _MAG_DIR.match(e.name)) and e.is_dir()
        )
    except OSError as exc:
        raise PlateError(f"{root}: cannot list the folder ({exc.strerror}); check its permissions") from None
    if subdirs:
        if magnification is not None:
            subdirs = [(m, p) for m, p in subdirs if m == magnification]
            if not subdirs:
                raise PlateError(f"{root}: has no {magnification}_images folder")
        return subdirs
    if magnification is None:
        raise PlateError(
            f"{root}: flat folder without <mag>_images subfolders; give the magnification "
            f"(`magnification`: {' | '.join(MAGNIFICATIONS)})"
        )
    return [(magnification, root)]


def index_plate(
    root: str | os.PathLike[str],
    *,
    magnification: str | None = None,
    check_headers: bool = True,
    require: Require = "brightfield",
    check_pixels: bool = False,
) -> PlateIndex:
    """Index and validate a plate folder.

    Parameters
    ----------
    root
        Plate folder (either layout, see module docstring).
    magnification
        Required for a flat folder; with the ``<mag>_images`` layout it restricts the index to one
        magnification.
    check_headers
        Read every TIFF header to check dtype (uint16), size consistency and readability.
    require
        ``"brightfield"``: a field needs its 7 planes (training, prediction); targets are optional.
        ``"targets"``: a field needs C01, C02 and C03 (evaluation); brightfield files are ignored
        and a field lacking a stain is left out with a warning.
    check_pixels
        Also decode every image's pixel data (reads the whole plate), which finds files whose
        header is intact but whose data is truncated or corrupt. Implies ``check_headers``.

    Returns
    -------
    PlateIndex
        Valid fields sorted by (magnification, well, field) and the issues found.
    """
    root = Path(root)
    issues: list[PlateIssue] = []
    fields: list[Field] = []
    if require not in ("brightfield", "targets"):
        raise ValueError(f"require must be 'brightfield' or 'targets', not {require!r}")
    from vstain.plate.omezarr import index_hcs, is_hcs_plate

    if is_hcs_plate(root):
        if magnification is not None:
            try:
                check_magnification(magnification)
            except ValueError as exc:
                raise PlateError(f"{root}: {exc}") from None
        fields, issues = index_hcs(root, magnification=magnification, require=require,
                                   check_headers=check_headers or check_pixels, check_pixels=check_pixels)
        order = {m: i for i, m in enumerate(MAGNIFICATIONS)}
        fields.sort(key=lambda f: (order[f.magnification], f.well, f.field, f.timepoint))
        return PlateIndex(root=root, fields=fields, issues=issues)
    for mag, folder in image_folders(root, magnification):
        found, folder_issues = _index_folder(
            folder, mag, _mask_folder(root, folder, mag), check_headers or check_pixels, require, check_pixels
        )
        fields.extend(found)
        issues.extend(folder_issues)
    seen: dict[FieldKey, Field] = {}
    for f in fields:
        if f.key in seen:  # two plate ids or time points in one folder: which one is meant?
            first = seen[f.key].files[0].name
            issues.append(
                PlateIssue(
                    f.files[0],
                    f"second {f.label} in the folder (first: {first}); keep one plate id and one "
                    "time point per folder",
                )
            )
        else:
            seen[f.key] = f
    fields = list(seen.values())
    if not fields and not issues:
        issues.append(PlateIssue(root, "no CV7000 images found"))
    order = {m: i for i, m in enumerate(MAGNIFICATIONS)}
    fields.sort(key=lambda f: (order[f.magnification], f.well, f.field, f.timepoint))
    return PlateIndex(root=root, fields=fields, issues=issues)


def _mask_folder(root: Path, folder: Path, magnification: str) -> Path:
    """Where the nucleus masks of ``folder`` live: ``<plate>/masks/<mag>_images`` (or ``<flat>/masks``)."""
    if folder.name == f"{magnification}_images":
        return folder.parent / "masks" / folder.name
    nested = root / "masks" / f"{magnification}_images"
    return nested if _is_dir(nested) else root / "masks"


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where a parent cannot be searched (permissions)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _issue_field(path: Path, magnification: str) -> FieldKey | None:
    """The field a file of a ``magnification`` folder belongs to, from its CV7000 name."""
    try:
        name = parse_name(path.name)
    except InvalidName:
        return None
    return (magnification, name.well, name.field)


def _index_folder(
    folder: Path, magnification: str, mask_dir: Path, check_headers: bool, require: Require,
    check_pixels: bool = False,
) -> tuple[list[Field], list[PlateIssue]]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        return [], [PlateIssue(folder, f"cannot list the folder ({exc.strerror}); check its permissions")]
    fields, issues = _index_entries(entries, magnification, mask_dir, check_headers, require, check_pixels)
    return fields, [replace(i, field=_issue_field(i.path, magnification)) for i in issues]


def _index_entries(
    entries: list[os.DirEntry], magnification: str, mask_dir: Path, check_headers: bool, require: Require,
    check_pixels: bool,
) -> tuple[list[Field], list[PlateIssue]]:
    issues: list[PlateIssue] = []
    duplicated: set[tuple[str, str, int, int]] = set()
    # (plate, well, timepoint, field) -> {(channel, z): path}
    groups: dict[tuple[str, str, int, int], dict[tuple[int, int], Path]] = defaultdict(dict)
    for entry in entries:
        if not entry.is_file() or entry.name.startswith("."):
            continue
        if not entry.name.lower().endswith(_TIFF_SUFFIXES):
            continue
        path = Path(entry.path)
        try:
            name = parse_name(entry.name)
        except InvalidName:
            issues.append(PlateIssue(path, "not a CV7000 image name (<plate>_<well>_T####F###L##A##Z##C##.tif)"))
            continue
        if name.channel not in (*CHANNEL_TARGETS, BRIGHTFIELD_CHANNEL):
            issues.append(PlateIssue(path, f"unknown channel C{name.channel:02d} (expected C01-C04)"))
            continue
        if require == "targets" and name.channel == BRIGHTFIELD_CHANNEL:
            continue  # not read by the job that asked
        if name.channel != BRIGHTFIELD_CHANNEL and name.z != 1:
            issues.append(
                PlateIssue(path, f"fluorescence channel C{name.channel:02d} at plane Z{name.z:02d} (expected Z01)")
            )
            continue
        if name.channel == BRIGHTFIELD_CHANNEL and name.z not in PLANES:
            issues.append(PlateIssue(path, f"brightfield plane Z{name.z:02d} outside Z01-Z07"))
            continue
        slot = (name.channel, name.z)
        group = groups[(name.plate, name.well, name.timepoint, name.field)]
        if slot in group:
            issues.append(PlateIssue(path, f"duplicate of {group[slot].name}; remove one of the two"))
            duplicated.add((name.plate, name.well, name.timepoint, name.field))
            continue
        group[slot] = path

    headers: dict[Path, tuple[tuple[int, ...], np.dtype]] = {}
    bad: set[Path] = set()
    if check_headers:
        for group in groups.values():
            for path in group.values():
                try:
                    headers[path] = tiff_header(path)
                except PlateError as exc:
                    issues.append(PlateIssue(path, str(exc).removeprefix(f"{path}: ")))
                    bad.add(path)
        for path, (shape, dtype) in headers.items():
            if dtype != np.uint16:
                issues.append(PlateIssue(path, f"{dtype} data; CV7000 images are uint16"))
                bad.add(path)
            elif len(shape) != 2:
                issues.append(PlateIssue(path, f"shape {shape} is not a single 2-D plane"))
                bad.add(path)
        if check_pixels:
            for path in headers:
                if path not in bad:
                    try:
                        read_tiff(path)
                    except PlateError as exc:
                        issues.append(PlateIssue(path, str(exc).removeprefix(f"{path}: ").replace(
                            "unreadable TIFF", "pixel data unreadable", 1)))
                        bad.add(path)
        shapes = Counter(headers[p][0] for p in headers if p not in bad)
        if len(shapes) > 1:
            common = shapes.most_common(1)[0][0]
            for path, (shape, _) in headers.items():
                if path not in bad and shape != common:
                    issues.append(
                        PlateIssue(path, f"size {'x'.join(map(str, shape))} differs from the plate's "
                                         f"{'x'.join(map(str, common))} ({magnification})")
                    )
                    bad.add(path)

    fields: list[Field] = []
    for (plate, well, timepoint, number), group in sorted(groups.items()):
        if require == "targets":
            found = _targets_field(group, bad, (plate, well, timepoint, number), magnification, headers, issues,
                                   duplicated=(plate, well, timepoint, number) in duplicated)
            if found is not None:
                fields.append(found)
            continue
        planes = [group.get((BRIGHTFIELD_CHANNEL, z)) for z in PLANES]
        present = [p for p in planes if p is not None]
        if not present:
            sound = [p for p in group.values() if p not in bad]
            if sound:  # a field made only of unreadable files was reported file by file already
                issues.append(PlateIssue(sound[0], f"field {well} F{number:03d} has no brightfield (C04) planes"))
            continue
        if len(present) < len(PLANES):
            reference = parse_name(present[0].name)
            missing = ", ".join(
                format_name(reference.for_channel(BRIGHTFIELD_CHANNEL, z=z))
                for z, p in zip(PLANES, planes)
                if p is None
            )
            issues.append(PlateIssue(present[0], f"field {well} F{number:03d} lacks brightfield plane(s) {missing}"))
            continue
        if (plate, well, timepoint, number) in duplicated:
            continue  # reported on the duplicate file; which copy is right is the user's call
        if any(p in bad for p in planes):
            continue  # the bad plane was reported already
        targets = {
            CHANNEL_TARGETS[c]: p
            for (c, z), p in group.items()
            if c != BRIGHTFIELD_CHANNEL and p not in bad
        }
        shape = headers.get(planes[0], (None,))[0] if check_headers else None
        field_obj = Field(
            plate=plate,
            well=well,
            field=number,
            magnification=magnification,
            brightfield=tuple(planes),  # type: ignore[arg-type]
            targets=dict(sorted(targets.items(), key=lambda kv: TARGETS.index(kv[0]))),
            shape=tuple(shape) if shape else None,  # type: ignore[arg-type]
            timepoint=timepoint,
        )
        mask = _find_mask(mask_dir, field_obj)
        if mask is not None and check_headers:
            problem = _mask_problem(mask, field_obj.shape, check_pixels)
            if problem:
                issues.append(PlateIssue(mask, problem))
                mask = None
        if mask is not None:
            field_obj = replace(field_obj, mask=mask)
        fields.append(field_obj)
    return fields, issues


def _targets_field(
    group: Mapping[tuple[int, int], Path],
    bad: set[Path],
    identity: tuple[str, str, int, int],
    magnification: str,
    headers: Mapping[Path, tuple[tuple[int, ...], np.dtype]],
    issues: list[PlateIssue],
    *,
    duplicated: bool,
) -> Field | None:
    """The field of a group of target files if all three stains are there and sound (``require="targets"``)."""
    plate, well, timepoint, number = identity
    if duplicated:
        return None  # reported on the duplicate file
    targets = {CHANNEL_TARGETS[c]: p for (c, _), p in group.items() if p not in bad}
    absent = [t for t in TARGETS if t not in targets]
    if absent:
        sound = [p for p in group.values() if p not in bad]
        if sound:  # unreadable files were reported already
            missing = ", ".join(f"C{TARGET_CHANNELS[t]:02d} ({t})" for t in absent)
            issues.append(PlateIssue(sound[0], f"field {well} F{number:03d} lacks {missing}; left out",
                                     severity="warning"))
        return None
    first = targets[TARGETS[0]]
    shape = headers.get(first, (None,))[0]
    return Field(
        plate=plate,
        well=well,
        field=number,
        magnification=magnification,
        brightfield=(),
        targets={t: targets[t] for t in TARGETS},
        shape=tuple(shape) if shape else None,  # type: ignore[arg-type]
        timepoint=timepoint,
    )


def _mask_problem(mask: Path, shape: tuple[int, int] | None, check_pixels: bool = False) -> str | None:
    """Why a nucleus label image cannot serve its field, or None."""
    try:
        mask_shape, dtype = tiff_header(mask)
        if check_pixels:
            read_tiff(mask)
    except PlateError as exc:
        return str(exc).removeprefix(f"{mask}: ")
    if dtype.kind not in "uib":
        return f"{dtype} data; a nucleus mask holds integer labels"
    if shape is not None and tuple(mask_shape) != tuple(shape):
        return f"mask size {'x'.join(map(str, mask_shape))} differs from its field's {'x'.join(map(str, shape))}"
    return None


def _find_mask(mask_dir: Path, field_obj: Field) -> Path | None:
    stem = Path(field_obj.target_filename("nuclei")).stem
    for suffix in _TIFF_SUFFIXES:
        candidate = mask_dir / f"{stem}{suffix}"
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a masks folder without search permission: no masks
            return None
    return None
