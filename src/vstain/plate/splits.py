"""Splits of a plate's fields into subsets, stored as CSV (``magnification,well,field,subset``).

The subsets are :data:`vstain.vocabulary.SPLIT_SUBSETS` (see docs/splits.md): ``train`` is
fitted, ``validation`` picks checkpoints and stops early, ``test`` and ``calibration`` are never
read by training. Ways to make one:

* :func:`leave_wells_out` — every field of the given wells is ``validation`` (the reference's
  split 1 held out well B03);
* :func:`random_fields_out` — N fields per magnification drawn with a seeded generator (the
  reference's final split held out 3 / 4 / 6 fields at 20x / 40x / 60x, unseeded);
* :func:`random_split` — seeded draw of any number of fields into several subsets at once
  (e.g. test and validation fields of a small plate).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from vstain.atomic import write_text_atomic
from vstain.errors import SplitError, SplitNotFound
from vstain.plate.index import FieldKey
from vstain.vocabulary import MAGNIFICATIONS, SPLIT_SUBSETS, TEST, TRAIN, VALIDATION

#: Fields per magnification held out by the reference's final split.
REFERENCE_HOLDOUT: dict[str, int] = {"20x": 3, "40x": 4, "60x": 6}
COLUMNS: tuple[str, ...] = ("magnification", "well", "field", "subset")

_FIELD = re.compile(r"^[Ff]?(\d{1,3})$")


@dataclass(frozen=True)
class Split:
    """Which subset each field belongs to."""

    assignments: Mapping[FieldKey, str]

    def keys(self, subset: str, *, magnification: str | None = None) -> set[FieldKey]:
        """The fields of ``subset`` (one of :data:`~vstain.vocabulary.SPLIT_SUBSETS`), at one magnification if given."""
        if subset not in SPLIT_SUBSETS:
            raise SplitError(f"unknown subset {subset!r}; expected one of {', '.join(SPLIT_SUBSETS)}")
        return {key for key, s in self.assignments.items()
                if s == subset and magnification in (None, key[0])}

    def check_fields(self, available: Iterable[FieldKey], *, source: str | os.PathLike[str] | None = None,
                     magnifications: Iterable[str] | None = None) -> None:
        """Refuse a split that names fields not in ``available`` (a typo, or another plate's split).

        Parameters
        ----------
        available
            The fields that exist (e.g. ``[f.key for f in index.fields]``).
        source
            Where the split came from, for the message (the CSV path).
        magnifications
            Only rows of these magnifications are checked (default: those of ``available``),
            so one split file can serve a plate's three magnifications trained one at a time.

        Raises
        ------
        SplitError
            Naming up to five of the unknown fields and how many there are.
        """
        present = set(available)
        mags = set(magnifications) if magnifications is not None else {k[0] for k in present}
        unknown = sorted((k for k in self.assignments if k[0] in mags and k not in present), key=_sort_key)
        if unknown:
            shown = ", ".join(f"{m} {w} F{n:03d}" for m, w, n in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            where = f"{source}: " if source is not None else ""
            raise SplitError(f"{where}{len(unknown)} field(s) of the split are not on the plate: {shown}{more}")

    def check_trainable(self, magnification: str, *, source: str | os.PathLike[str] | None = None) -> None:
        """Refuse a split that leaves nothing to train on or no ``validation`` field at ``magnification``.

        A split file written before ``validation`` existed called the checkpoint-picking fields
        ``test``; such a file (``train`` and ``test`` rows, no ``validation``) is refused with the
        rename to make, rather than trained without validation.

        Raises
        ------
        SplitError
            One line naming the file and the fix.
        """
        where = f"{source}: " if source is not None else ""
        if not self.keys(TRAIN, magnification=magnification):
            raise SplitError(f"{where}no {TRAIN} field at {magnification}; nothing to train on")
        if self.keys(VALIDATION, magnification=magnification):
            return
        if self.keys(TEST, magnification=magnification):
            raise SplitError(
                f"{where}no {VALIDATION} field at {magnification}, only {TRAIN} and {TEST}: the fields that pick "
                f"checkpoints are now called {VALIDATION} ({TEST} fields are never read by training); "
                f"rename {TEST} to {VALIDATION} for those fields"
            )
        raise SplitError(f"{where}no {VALIDATION} field at {magnification}; training needs at least one "
                         f"(subset {VALIDATION}, see docs/splits.md)")

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of fields per (magnification, subset)."""
        out: dict[tuple[str, str], int] = {}
        for (mag, _, _), subset in self.assignments.items():
            out[(mag, subset)] = out.get((mag, subset), 0) + 1
        return out

    def to_csv(self) -> str:
        """CSV text, rows sorted by magnification, well and field."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for (mag, well, number), subset in sorted(self.assignments.items(), key=lambda kv: _sort_key(kv[0])):
            writer.writerow((mag, well, number, subset))
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the CSV atomically."""
        return write_text_atomic(path, self.to_csv())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Split":
        """Read a split CSV; errors name the file and line."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SplitNotFound(f"{path}: no such split file") from None
        except UnicodeDecodeError:
            raise SplitError(f"{path}: not a text (CSV) file") from None
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise SplitError(f"{path}: split CSV lacks column(s) {', '.join(missing)} (need {','.join(COLUMNS)})")
        assignments: dict[FieldKey, str] = {}
        for line, row in enumerate(reader, start=2):
            mag, well, number, subset = (str(row[c] or "").strip() for c in COLUMNS)
            match = _FIELD.match(number)
            if mag not in MAGNIFICATIONS:
                raise SplitError(f"{path}:{line}: unknown magnification {mag!r}")
            if not match:
                raise SplitError(f"{path}:{line}: field {number!r} is not a field number like 7 or F007")
            if subset not in SPLIT_SUBSETS:
                raise SplitError(f"{path}:{line}: subset {subset!r} is not one of {', '.join(SPLIT_SUBSETS)}")
            key = (mag, well, int(match.group(1)))
            if key in assignments:
                raise SplitError(f"{path}:{line}: {mag} {well} F{key[2]:03d} is listed twice")
            assignments[key] = subset
        if not assignments:
            raise SplitError(f"{path}: split CSV has no rows")
        return cls(assignments)


def leave_wells_out(keys: Iterable[FieldKey], wells: Iterable[str]) -> Split:
    """Every field of ``wells`` (at every magnification) is ``validation``, the rest ``train``.

    Raises
    ------
    SplitError
        If a well is not on the plate, or nothing would be left to train on.
    """
    keys = list(keys)
    held = {w.upper() for w in wells}
    present = {well.upper() for _, well, _ in keys}
    unknown = sorted(held - present)
    if unknown:
        raise SplitError(f"well(s) {', '.join(unknown)} not on the plate (wells: {', '.join(sorted(present))})")
    split = Split({key: VALIDATION if key[1].upper() in held else TRAIN for key in keys})
    if not split.keys(TRAIN):
        raise SplitError("the split holds out every well; nothing is left to train on")
    return split


def random_fields_out(
    keys: Iterable[FieldKey], n_validation: int | Mapping[str, int], *, seed: int
) -> Split:
    """Hold out ``n_validation`` randomly chosen fields per magnification as ``validation``.

    Parameters
    ----------
    keys
        The plate's fields.
    n_validation
        Fields to hold out, one number for every magnification or a mapping such as
        :data:`REFERENCE_HOLDOUT`.
    seed
        Seed of the generator; each magnification draws from its own stream
        (``default_rng([seed, index])``), so adding a magnification does not change the others.
    """
    keys = sorted(set(keys), key=_sort_key)
    split: dict[FieldKey, str] = {key: TRAIN for key in keys}
    for mag in sorted({k[0] for k in keys}, key=MAGNIFICATIONS.index):
        candidates = [k for k in keys if k[0] == mag]
        n = n_validation if isinstance(n_validation, int) else n_validation.get(mag, 0)
        if not 0 <= n < len(candidates):
            raise SplitError(
                f"cannot hold out {n} of the {len(candidates)} {mag} fields (need 0 <= n < {len(candidates)})"
            )
        rng = np.random.default_rng([seed, MAGNIFICATIONS.index(mag)])
        for i in rng.choice(len(candidates), size=n, replace=False):
            split[candidates[int(i)]] = VALIDATION
    return Split(split)


def random_split(keys: Iterable[FieldKey], sizes: Mapping[str, int], *, seed: int) -> Split:
    """Seeded draw of ``sizes[subset]`` fields into each subset, in the order given; the rest ``train``.

    The fields of every magnification are drawn together (one permutation of the sorted keys),
    so this suits a small plate where the counts are totals, e.g. ``{"test": 2, "validation": 1}``.

    Parameters
    ----------
    keys
        The fields to split.
    sizes
        Fields per subset (not ``train``), drawn in this order.
    seed
        Seed of the permutation (stream ``[seed, 7]``, apart from :func:`random_fields_out`'s
        per-magnification streams ``[seed, 0..2]``).

    Raises
    ------
    SplitError
        If a subset is unknown or ``train``, or fewer than ``sum(sizes) + 1`` fields are given.
    """
    ordered = sorted(set(keys), key=_sort_key)
    for subset, n in sizes.items():
        if subset not in SPLIT_SUBSETS or subset == TRAIN:
            raise SplitError(f"cannot draw fields into subset {subset!r}; use one of "
                             f"{', '.join(s for s in SPLIT_SUBSETS if s != TRAIN)}")
        if n < 0:
            raise SplitError(f"cannot draw {n} fields into {subset}")
    wanted = sum(sizes.values())
    if len(ordered) < wanted + 1:
        raise SplitError(f"the split needs at least {wanted + 1} fields ({wanted} held out, 1 to train on); "
                         f"there are {len(ordered)}")
    order = iter(np.random.default_rng([seed, 7]).permutation(len(ordered)))
    split: dict[FieldKey, str] = {key: TRAIN for key in ordered}
    for subset, n in sizes.items():
        for _ in range(n):
            split[ordered[int(next(order))]] = subset
    return Split(split)


def _sort_key(key: FieldKey) -> tuple[int, str, int]:
    mag, well, number = key
    return (MAGNIFICATIONS.index(mag) if mag in MAGNIFICATIONS else 9, well, number)


def read_split_keys(path: str | os.PathLike[str], subset: str = TRAIN) -> set[FieldKey]:
    """The ``(magnification, well, field)`` keys of ``subset`` in the split CSV at ``path``."""
    return Split.load(path).keys(subset)
