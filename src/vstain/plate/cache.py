"""A memory-mapped copy of a plate, for fast random crops of the 7-plane stack.

Reading a 512² crop from TIFFs means decoding seven whole planes; from a ``.npy`` opened with
``np.load(mmap_mode="r")`` it touches only the crop's rows. Layout of a cache folder::

    <cache>/manifest.json                     every cached field, written last
    <cache>/<mag>/<well>_F<nnn>/brightfield.npy   (7, H, W) uint16
                               nuclei.npy, lipids.npy, cytoplasm.npy   (H, W) uint16, when present
                               mask.npy                                (H, W), when present
                               field.json         sources (name, size, mtime) — written after the arrays

Every file is written atomically; a field whose ``field.json`` matches its source files is
skipped, so an interrupted run resumes where it stopped. The plate itself is never written to:
the default cache folder is ``<plate>.vstain-cache`` beside it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from vstain.atomic import atomic_path, write_text_atomic
from vstain.errors import PlateError, PlateNotFound
from vstain.plate.images import read_image
from vstain.plate.index import Field, FieldKey
from vstain.vocabulary import N_PLANES

_FORMAT = "vstain.plate_cache"
_VERSION = 1
MANIFEST = "manifest.json"
FIELD_RECORD = "field.json"


@dataclass(frozen=True)
class CachedField:
    """One cached field: read-only memory maps of its arrays."""

    key: FieldKey
    brightfield: np.memmap
    targets: Mapping[str, np.memmap] = dataclass_field(default_factory=dict)
    mask: np.memmap | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the field."""
        return tuple(self.brightfield.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class CacheReport:
    """What :func:`cache_plate` did."""

    folder: Path
    written: list[FieldKey]
    skipped: list[FieldKey]


def default_cache_folder(plate: str | os.PathLike[str]) -> Path:
    """``<plate>.vstain-cache`` beside the plate folder."""
    root = Path(plate).resolve()
    return root.with_name(root.name + ".vstain-cache")


def field_folder(key: FieldKey) -> Path:
    """Relative folder of a field inside a cache: ``<mag>/<well>_F<nnn>``."""
    mag, well, number = key
    return Path(mag) / f"{well}_F{number:03d}"


def cache_plate(
    fields: Iterable[Field],
    folder: str | os.PathLike[str],
    *,
    plate: str | os.PathLike[str] | None = None,
    progress: Callable[[Field, bool], None] | None = None,
) -> CacheReport:
    """Convert ``fields`` to memory-mappable ``.npy`` files under ``folder``.

    Parameters
    ----------
    fields
        Valid fields of a plate (from :func:`vstain.plate.index.index_plate`).
    folder
        Cache folder; created if needed. Must not lie inside ``plate``.
    plate
        The plate folder, recorded in the manifest and guarded against being written into.
    progress
        Called as ``progress(field, written)`` after each field (``written`` False if skipped).

    Returns
    -------
    CacheReport
        Fields written and fields skipped because their cache was up to date.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PlateError(f"{folder}: exists and is not a folder; choose another cache folder")
    fields = list(fields)
    if plate is not None:
        _refuse_inside(folder, Path(plate))
    for f in fields:  # also refuse a cache among the images of a flat folder
        _refuse_inside(folder, f.brightfield[0].parent)
    written: list[FieldKey] = []
    skipped: list[FieldKey] = []
    entries = []
    for f in fields:
        target = folder / field_folder(f.key)
        record = _field_record(f)
        fresh = not _is_current(target, record)
        if fresh:
            _write_field(f, target, record)
        (written if fresh else skipped).append(f.key)
        entries.append({"key": list(f.key), "folder": field_folder(f.key).as_posix(), "files": record["files"]})
        if progress is not None:
            progress(f, fresh)
    manifest = {
        "format": _FORMAT,
        "version": _VERSION,
        "plate": None if plate is None else str(Path(plate).resolve()),
        "fields": entries,
    }
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return CacheReport(folder=folder, written=written, skipped=skipped)


class PlateCache:
    """A cache folder written by :func:`cache_plate`; :meth:`open` gives a field's memory maps."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PlateError(
                f"{self.folder}: no {MANIFEST}; not a (complete) vstain cache — run `vstain cache`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlateError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise PlateError(f"{path}: not a vstain cache manifest")
        self.plate = manifest.get("plate")
        self._entries: dict[FieldKey, dict] = {}
        for entry in manifest.get("fields", []):
            mag, well, number = entry["key"]
            self._entries[(mag, well, int(number))] = entry

    @property
    def keys(self) -> list[FieldKey]:
        """The cached fields, in manifest order."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def open(self, key: FieldKey) -> CachedField:
        """Memory-map the arrays of field ``key`` (read-only)."""
        key = (key[0], key[1], int(key[2]))
        if key not in self._entries:
            raise PlateError(f"{self.folder}: field {key[0]} {key[1]} F{key[2]:03d} is not cached")
        entry = self._entries[key]
        base = self.folder / entry["folder"]
        files: dict[str, str] = entry["files"]
        arrays = {name: _load(base / filename) for name, filename in files.items()}
        brightfield = arrays.pop("brightfield")
        mask = arrays.pop("mask", None)
        return CachedField(key=key, brightfield=brightfield, targets=arrays, mask=mask)


def open_cached_field(folder: str | os.PathLike[str], key: FieldKey) -> CachedField:
    """Memory maps of one field of the cache at ``folder`` (see :class:`PlateCache`)."""
    return PlateCache(folder).open(key)


# -- internals --------------------------------------------------------------------------------


def _refuse_inside(folder: Path, plate: Path) -> None:
    cache, root = folder.resolve(), plate.resolve()
    if cache == root or cache.is_relative_to(root):
        raise PlateError(f"{folder}: cache folder inside the plate {plate}; choose one outside (`folder`)")


def _field_record(f: Field) -> dict:
    sources = {"brightfield": list(f.brightfield), **{t: [p] for t, p in f.targets.items()}}
    if f.mask is not None:
        sources["mask"] = [f.mask]
    return {
        "key": list(f.key),
        "files": {name: f"{name}.npy" for name in sources},
        "sources": {
            name: [[p.name, (s := p.stat()).st_size, s.st_mtime_ns] for p in paths] for name, paths in sources.items()
        },
    }


def _is_current(target: Path, record: dict) -> bool:
    try:
        existing = json.loads((target / FIELD_RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return existing == record and all((target / name).is_file() for name in record["files"].values())


def _write_field(f: Field, target: Path, record: dict) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / FIELD_RECORD).unlink(missing_ok=True)  # stale until every array is rewritten
    first = read_image(f.brightfield[0])
    with atomic_path(target / "brightfield.npy") as tmp:
        # Filled plane by plane so only one plane is held in memory besides the map.
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(N_PLANES, *first.shape))
        stack[0] = first
        for z, path in enumerate(f.brightfield[1:], start=1):
            plane = read_image(path)
            if plane.shape != first.shape:
                raise PlateError(f"{path}: size {plane.shape} differs from {f.brightfield[0].name} {first.shape}")
            stack[z] = plane
        stack.flush()
        del stack
    singles = {**f.targets, **({"mask": f.mask} if f.mask is not None else {})}
    for name, path in singles.items():
        image = read_image(path)
        with atomic_path(target / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, image)
    write_text_atomic(target / FIELD_RECORD, json.dumps(record, indent=1) + "\n")


def _load(path: Path) -> np.memmap:
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise PlateNotFound(f"{path}: missing from the cache; rerun `vstain cache`") from None
    except (ValueError, OSError) as exc:
        raise PlateError(f"{path}: unreadable cache file ({exc}); rerun `vstain cache`") from None
