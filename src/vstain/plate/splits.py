"""Train/test splits of a plate's fields, stored as CSV (``magnification,well,field,subset``).

Two ways to hold fields out, as the reference did:

* :func:`leave_wells_out` — every field of the given wells is ``test`` (the reference's split 1
  held out well B03);
* :func:`random_fields_out` — N fields per magnification drawn with a seeded generator (the
  reference's final split held out 3 / 4 / 6 fields at 20x / 40x / 60x, unseeded).
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
from vstain.errors import VstainError
from vstain.plate.index import FieldKey
from vstain.vocabulary import MAGNIFICATIONS

SUBSETS: tuple[str, ...] = ("train", "test")
#: Fields per magnification held out by the reference's final split.
REFERENCE_HOLDOUT: dict[str, int] = {"20x": 3, "40x": 4, "60x": 6}
COLUMNS: tuple[str, ...] = ("magnification", "well", "field", "subset")

_FIELD = re.compile(r"^[Ff]?(\d{1,3})$")


@dataclass(frozen=True)
class Split:
    """Which subset each field belongs to."""

    assignments: Mapping[FieldKey, str]

    def keys(self, subset: str) -> set[FieldKey]:
        """The fields of ``subset`` (``train`` or ``test``)."""
        if subset not in SUBSETS:
            raise VstainError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}")
        return {key for key, s in self.assignments.items() if s == subset}

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
            raise VstainError(f"{path}: no such split file") from None
        except UnicodeDecodeError:
            raise VstainError(f"{path}: not a text (CSV) file") from None
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise VstainError(f"{path}: split CSV lacks column(s) {', '.join(missing)} (need {','.join(COLUMNS)})")
        assignments: dict[FieldKey, str] = {}
        for line, row in enumerate(reader, start=2):
            mag, well, number, subset = (str(row[c] or "").strip() for c in COLUMNS)
            match = _FIELD.match(number)
            if mag not in MAGNIFICATIONS:
                raise VstainError(f"{path}:{line}: unknown magnification {mag!r}")
            if not match:
                raise VstainError(f"{path}:{line}: field {number!r} is not a field number like 7 or F007")
            if subset not in SUBSETS:
                raise VstainError(f"{path}:{line}: subset {subset!r} is not one of {', '.join(SUBSETS)}")
            key = (mag, well, int(match.group(1)))
            if key in assignments:
                raise VstainError(f"{path}:{line}: {mag} {well} F{key[2]:03d} is listed twice")
            assignments[key] = subset
        if not assignments:
            raise VstainError(f"{path}: split CSV has no rows")
        return cls(assignments)


def leave_wells_out(keys: Iterable[FieldKey], wells: Iterable[str]) -> Split:
    """Every field of ``wells`` (at every magnification) is ``test``, the rest ``train``.

    Raises
    ------
    VstainError
        If a well is not on the plate, or nothing would be left to train on.
    """
    keys = list(keys)
    held = {w.upper() for w in wells}
    present = {well.upper() for _, well, _ in keys}
    unknown = sorted(held - present)
    if unknown:
        raise VstainError(f"well(s) {', '.join(unknown)} not on the plate (wells: {', '.join(sorted(present))})")
    split = Split({key: "test" if key[1].upper() in held else "train" for key in keys})
    if not split.keys("train"):
        raise VstainError("the split holds out every well; nothing is left to train on")
    return split


def random_fields_out(
    keys: Iterable[FieldKey], n_test: int | Mapping[str, int], *, seed: int
) -> Split:
    """Hold out ``n_test`` randomly chosen fields per magnification.

    Parameters
    ----------
    keys
        The plate's fields.
    n_test
        Fields to hold out, one number for every magnification or a mapping such as
        :data:`REFERENCE_HOLDOUT`.
    seed
        Seed of the generator; each magnification draws from its own stream
        (``default_rng([seed, index])``), so adding a magnification does not change the others.
    """
    keys = sorted(set(keys), key=_sort_key)
    split: dict[FieldKey, str] = {key: "train" for key in keys}
    for mag in sorted({k[0] for k in keys}, key=MAGNIFICATIONS.index):
        candidates = [k for k in keys if k[0] == mag]
        n = n_test if isinstance(n_test, int) else n_test.get(mag, 0)
        if not 0 <= n < len(candidates):
            raise VstainError(
                f"cannot hold out {n} of the {len(candidates)} {mag} fields (need 0 <= n < {len(candidates)})"
            )
        rng = np.random.default_rng([seed, MAGNIFICATIONS.index(mag)])
        for i in rng.choice(len(candidates), size=n, replace=False):
            split[candidates[int(i)]] = "test"
    return Split(split)


def _sort_key(key: FieldKey) -> tuple[int, str, int]:
    mag, well, number = key
    return (MAGNIFICATIONS.index(mag) if mag in MAGNIFICATIONS else 9, well, number)


def read_split_keys(path: str | os.PathLike[str], subset: str = "train") -> set[FieldKey]:
    """The ``(magnification, well, field)`` keys of ``subset`` in the split CSV at ``path``."""
    return Split.load(path).keys(subset)
