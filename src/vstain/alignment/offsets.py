"""The offsets table: one row per field and stain, with per-site consensus and fallbacks.

A CSV (``vstain align --out offsets.csv``) with the columns :data:`COLUMNS`:

``magnification, well, field, stain, dy_px, dx_px, confidence, source, measured_dy_px, measured_dx_px``

* ``dy_px, dx_px``: the offset to use for that field and stain (sign convention in
  :mod:`vstain.alignment.estimate`: a structure at brightfield ``(y, x)`` is at stain
  ``(y - dy, x - dx)``);
* ``measured_*`` and ``confidence``: what the field itself gave;
* ``source``: where ``dy_px, dx_px`` come from (:data:`SOURCES`):

  - ``measured``: the field's own estimate (confidence >= :data:`MIN_CONFIDENCE`);
  - ``site consensus``: the median over the wells of the confident estimates of the same site
    (field number) and stain, since the offset is a property of the optics. Where no well of the
    site is confident, the wells' own estimates still count if they agree: at least two, and more
    than half of those with any agreeing tile (confidence above 0), within :data:`AGREE_PX` of
    their median on both axes; the median of those that agree is the site's offset. Estimates
    that no tile of their own field supports, or that disagree across wells, never count;
  - ``field consensus``: no well was confident at this site for this stain; the median of the
    field's other, confident stains (the stains share most of their offset: one camera), or if
    the field has none, of every confident stain at the site. Each is first moved by the plate's
    median difference between the two stains, over the fields where both are trusted (at least
    :data:`MIN_PAIRED_FIELDS`; else by nothing): each filter adds its own small term. A stain with
    a confident relative offset (below) is moved by it instead, through the other stain's
    difference to the rest;
  - ``relative``: the stain is registered through another stain rather than the brightfield
    (nuclei through the holes they leave in the cytoplasm stain,
    :mod:`vstain.alignment.through_stain`): the offset in use of that stain on this field plus
    the plate's offset between the two. Used where the field's own estimate is not (with
    ``per="site"``: where no well of the site was confident), the plate's relative offset is
    confident, and the other stain's offset was measured on it (``measured`` or ``site
    consensus``, not a fallback);
  - ``stain consensus``: neither; the median of this stain over the sites;
  - ``none``: no field of this stain was confident (blank stain): offset 0.

With ``per="site"`` (``vstain align --per site``) every field of a site takes the site consensus,
its own confident estimate included, and the fallbacks apply only where no well of the site was
confident: the offset is a property of the optics, so where the plate has several wells their
median is a steadier estimate than any one field's (docs/alignment.md, "Per site").

The *site offsets* (:meth:`OffsetTable.site_offsets`) are what travels in a model bundle and
what ``vstain predict --frame fluorescence`` applies to another plate's fields.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from vstain.alignment.estimate import AGREE_PX
from vstain.atomic import write_text_atomic
from vstain.errors import AlignmentError, ConfigNotFound
from vstain.vocabulary import MAGNIFICATIONS, OFFSETS_PER, TARGETS, OffsetsPer

COLUMNS: tuple[str, ...] = (
    "magnification", "well", "field", "stain", "dy_px", "dx_px", "confidence", "source",
    "measured_dy_px", "measured_dx_px",
)
MEASURED, SITE, RELATIVE, FIELD, STAIN, NONE = (
    "measured", "site consensus", "relative", "field consensus", "stain consensus", "none")
SOURCES: tuple[str, ...] = (MEASURED, SITE, RELATIVE, FIELD, STAIN, NONE)
#: A field's estimate is used when at least this fraction of its tiles agree (see estimate.py).
MIN_CONFIDENCE = 0.5

#: Fields on which two stains must both be trusted before their difference corrects a fallback.
MIN_PAIRED_FIELDS = 2

SiteKey = tuple[str, str, int]
"""(magnification, stain, field number): one site of one stain."""

_FIELD = re.compile(r"^F?(\d+)$")


@dataclass(frozen=True)
class OffsetRow:
    """One field and stain of an offsets table (see the module docstring for the columns)."""

    magnification: str
    well: str
    field: int
    stain: str
    dy_px: float
    dx_px: float
    confidence: float
    source: str
    measured_dy_px: float
    measured_dx_px: float

    @property
    def site(self) -> SiteKey:
        return (self.magnification, self.stain, self.field)

    @property
    def offset(self) -> tuple[float, float]:
        return (self.dy_px, self.dx_px)


def _median(pairs: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    values = np.asarray(list(pairs), dtype=np.float64)
    if not len(values):
        return None
    med = np.median(values, axis=0)
    return (float(med[0]), float(med[1]))


def _agreeing_sites(
    measured: Mapping[tuple[str, str, int, str], tuple[float, float, float]], *, exclude: Mapping[SiteKey, Any],
) -> dict[SiteKey, tuple[float, float]]:
    """Sites (not in ``exclude``) whose wells' own estimates agree: the median of those that agree.

    Only estimates with some support in their own field count (confidence above 0: at least one
    tile agreed); a site needs at least two of them, and more than half within :data:`AGREE_PX` of
    their median on both axes. Two unrelated estimates agree by chance about once in a thousand
    sites (two offsets drawn within +-16 px), a majority of many wells practically never.
    """
    grouped: dict[SiteKey, list[tuple[float, float]]] = {}
    for (mag, _, number, stain), (dy, dx, confidence) in measured.items():
        if confidence > 0 and (mag, stain, number) not in exclude:
            grouped.setdefault((mag, stain, number), []).append((dy, dx))
    agreed = {}
    for key, values in grouped.items():
        centre = np.median(np.asarray(values), axis=0)
        close = [v for v in values if abs(v[0] - centre[0]) <= AGREE_PX and abs(v[1] - centre[1]) <= AGREE_PX]
        if len(close) >= 2 and 2 * len(close) > len(values):
            agreed[key] = _median(close)
    return agreed  # type: ignore[return-value]


def _stain_differences(
    trusted: Mapping[tuple[str, str, int, str], tuple[float, float]],
) -> dict[tuple[str, str, str], tuple[float, float]]:
    """``(magnification, stain, other) -> offset of stain minus offset of other``: the median over the
    fields where both are trusted, for pairs trusted together on at least :data:`MIN_PAIRED_FIELDS`.
    """
    by_field: dict[tuple[str, str, int], dict[str, tuple[float, float]]] = {}
    for (mag, well, number, stain), value in trusted.items():
        by_field.setdefault((mag, well, number), {})[stain] = value
    pairs: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for (mag, _, _), stains in by_field.items():
        for stain, (dy, dx) in stains.items():
            for other, (ody, odx) in stains.items():
                if other != stain:
                    pairs.setdefault((mag, stain, other), []).append((dy - ody, dx - odx))
    return {key: _median(values) for key, values in pairs.items()  # type: ignore[misc]
            if len(values) >= MIN_PAIRED_FIELDS}


def resolve(
    measured: Mapping[tuple[str, str, int, str], tuple[float, float, float]],
    *, min_confidence: float = MIN_CONFIDENCE, per: OffsetsPer = "field",
    relative: Mapping[tuple[str, str], tuple[str, float, float]] | None = None,
) -> "OffsetTable":
    """Build the table from per-field estimates, with the site and stain consensus as fallbacks.

    Parameters
    ----------
    measured
        ``(magnification, well, field, stain) -> (dy, dx, confidence)``.
    min_confidence
        Estimates below this confidence are replaced by the consensus.
    per
        ``field``: a confident field keeps its own estimate; ``site``: every field of a site with
        a confident well takes the site consensus (the median over its confident wells).
    relative
        ``(magnification, stain) -> (through, dy, dx)``: a confident plate-wide offset of ``stain``
        against the stain ``through`` (:mod:`vstain.alignment.through_stain`). A field of
        ``stain`` that would otherwise fall back to another field's or stain's offset uses the
        offset in use of ``through`` on the same field plus ``(dy, dx)`` (source ``relative``),
        where that offset is ``through``'s own (``measured`` or ``site consensus``); elsewhere
        ``(dy, dx)`` is the stains' difference in the field consensus (module docstring).
    """
    if per not in OFFSETS_PER:
        raise AlignmentError(f"per={per!r}: expected one of {', '.join(OFFSETS_PER)}")
    confident: dict[SiteKey, list[tuple[float, float]]] = {}
    for (mag, _, number, stain), (dy, dx, confidence) in measured.items():
        if confidence >= min_confidence:
            confident.setdefault((mag, stain, number), []).append((dy, dx))
    site = {key: _median(values) for key, values in confident.items()}
    site.update(_agreeing_sites(measured, exclude=site))
    by_stain: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (mag, stain, _), value in site.items():
        by_stain.setdefault((mag, stain), []).append(value)  # type: ignore[arg-type]
    stain_median = {key: _median(values) for key, values in by_stain.items()}
    # What a field's other stains may fall back on: its confident stains, and those whose site
    # agreed across wells (at that site's offset).
    trusted: dict[tuple[str, str, int, str], tuple[float, float]] = {}
    for (mag, well, number, stain), (dy, dx, confidence) in measured.items():
        if confidence >= min_confidence:
            trusted[(mag, well, number, stain)] = (dy, dx)
        elif (mag, stain, number) in site and (mag, stain, number) not in confident:
            trusted[(mag, well, number, stain)] = site[(mag, stain, number)]  # type: ignore[assignment]
    between = _stain_differences(trusted)
    # A plate's relative offset (measured through the other stain) is the difference between the two
    # stains, and through that stain's differences, to the others.
    for (mag, stain), (through, rdy, rdx) in (relative or {}).items():
        between[(mag, stain, through)] = (rdy, rdx)
        for (m, first, other), (ddy, ddx) in list(between.items()):
            if m == mag and first == through and other != stain:
                between[(mag, stain, other)] = (rdy + ddy, rdx + ddx)
    by_field: dict[tuple[str, str, int], list[tuple[str, tuple[float, float]]]] = {}
    by_site: dict[tuple[str, int], list[tuple[str, tuple[float, float]]]] = {}
    for (mag, well, number, stain), value in trusted.items():
        by_field.setdefault((mag, well, number), []).append((stain, value))
        by_site.setdefault((mag, number), []).append((stain, value))

    def consensus(mag: str, stain: str, others: list[tuple[str, tuple[float, float]]]) -> tuple[float, float] | None:
        # Each other stain's offset moved by the plate's difference between the two stains, where
        # the plate measured it (the stains' own terms: one light path, different filters).
        moved = []
        for other, (dy, dx) in others:
            if other != stain:
                ddy, ddx = between.get((mag, stain, other), (0.0, 0.0))
                moved.append((dy + ddy, dx + ddx))
        return _median(moved)

    relative = relative or {}
    # Offsets of this field's stains that were measured on that stain (its own or its site's): the
    # relative source adds a relative offset only to those. Added to an uncorrected fallback it
    # carried the fallback's error plus its own (a 60x plate: 0.40 -> 0.44 px); where the other
    # stain fell back, the field consensus applies it instead, through the stain differences.
    measured_here: dict[tuple[str, str, int, str], tuple[float, float]] = {}
    rows = []
    # Stains registered through another stain last, so that the other stain's offset is known.
    order = sorted(measured.items(), key=lambda item: (item[0][0], item[0][3]) in relative)
    for (mag, well, number, stain), (dy, dx, confidence) in order:
        through = relative.get((mag, stain))
        through_used = None if through is None else measured_here.get((mag, well, number, through[0]))
        if confidence >= min_confidence and per == "field":
            used, source = (dy, dx), MEASURED
        elif (mag, stain, number) in site and (per == "site" or through_used is None):
            used, source = site[(mag, stain, number)], SITE
        elif through is not None and through_used is not None:
            used, source = (through_used[0] + through[1], through_used[1] + through[2]), RELATIVE
        elif (found := consensus(mag, stain, by_field.get((mag, well, number), []))) is not None:
            used, source = found, FIELD
        elif (found := consensus(mag, stain, by_site.get((mag, number), []))) is not None:
            used, source = found, FIELD
        elif (mag, stain) in stain_median:
            used, source = stain_median[(mag, stain)], STAIN
        else:
            used, source = (0.0, 0.0), NONE
        if source in (MEASURED, SITE):
            measured_here[(mag, well, number, stain)] = used  # type: ignore[assignment]
        rows.append(OffsetRow(mag, well, number, stain, used[0], used[1], confidence, source, dy, dx))  # type: ignore[index]
    return OffsetTable(rows)


class OffsetTable:
    """Offsets of every field and stain of a plate (rows sorted by magnification, stain, field, well)."""

    def __init__(self, rows: Iterable[OffsetRow]) -> None:
        self.rows = sorted(rows, key=lambda r: (MAGNIFICATIONS.index(r.magnification), TARGETS.index(r.stain),
                                                r.field, r.well))
        self._by_field = {(r.magnification, r.well, r.field, r.stain): r for r in self.rows}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def magnifications(self) -> list[str]:
        return sorted({r.magnification for r in self.rows}, key=MAGNIFICATIONS.index)

    @property
    def stains(self) -> list[str]:
        return sorted({r.stain for r in self.rows}, key=TARGETS.index)

    def site_offsets(self) -> dict[SiteKey, tuple[float, float]]:
        """One offset per site and stain: the median over wells of the offsets in use."""
        grouped: dict[SiteKey, list[tuple[float, float]]] = {}
        for row in self.rows:
            grouped.setdefault(row.site, []).append(row.offset)
        return {key: _median(values) for key, values in grouped.items()}  # type: ignore[misc]

    def offset(self, magnification: str, well: str, field: int, stain: str) -> tuple[float, float] | None:
        """The offset of one field's stain, or None if the table has no such row."""
        row = self._by_field.get((magnification, well, field, stain))
        return None if row is None else row.offset

    # ------------------------------------------------------------------ files
    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in self.rows:
            writer.writerow((r.magnification, r.well, r.field, r.stain, f"{r.dy_px:.3f}", f"{r.dx_px:.3f}",
                             f"{r.confidence:.3f}", r.source, f"{r.measured_dy_px:.3f}", f"{r.measured_dx_px:.3f}"))
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the CSV atomically."""
        return write_text_atomic(path, self.to_csv())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "OffsetTable":
        """Read an offsets CSV; errors name the file, the line and the column."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigNotFound(f"{path}: no such offsets file (write one with vstain align)") from None
        except (UnicodeDecodeError, IsADirectoryError):
            raise AlignmentError(f"{path}: not an offsets CSV file") from None
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS[:8] if c not in (reader.fieldnames or ())]
        if missing:
            raise AlignmentError(f"{path}: offsets CSV lacks column(s) {', '.join(missing)} "
                                 f"(need {','.join(COLUMNS[:8])}; see docs/alignment.md)")
        rows = []
        seen = set()
        for line, raw in enumerate(reader, start=2):
            rows.append(row := _parse_row(raw, f"{path}:{line}"))
            key = (row.magnification, row.well, row.field, row.stain)
            if key in seen:
                raise AlignmentError(f"{path}:{line}: {row.magnification} {row.well} F{row.field:03d} "
                                     f"{row.stain} is listed twice")
            seen.add(key)
        if not rows:
            raise AlignmentError(f"{path}: offsets CSV has no rows")
        return cls(rows)

    # ------------------------------------------------------------------ bundles
    def to_sites(self, magnification: str) -> dict[str, Any]:
        """JSON-ready site offsets of one magnification: ``{"magnification", "sites": {stain: {"F001": [dy, dx]}}}``."""
        sites: dict[str, dict[str, list[float]]] = {}
        for (mag, stain, number), (dy, dx) in sorted(self.site_offsets().items(), key=lambda kv: kv[0]):
            if mag == magnification:
                sites.setdefault(stain, {})[f"F{number:03d}"] = [round(dy, 4), round(dx, 4)]
        return {"magnification": magnification, "sites": sites}


def _parse_row(raw: Mapping[str, Any], where: str) -> OffsetRow:
    values = {c: str(raw.get(c) or "").strip() for c in COLUMNS}
    if values["magnification"] not in MAGNIFICATIONS:
        raise AlignmentError(f"{where}: unknown magnification {values['magnification']!r}")
    if values["stain"] not in TARGETS:
        raise AlignmentError(f"{where}: unknown stain {values['stain']!r}; expected one of {', '.join(TARGETS)}")
    match = _FIELD.match(values["field"])
    if not match:
        raise AlignmentError(f"{where}: field {values['field']!r} is not a field number like 7 or F007")
    if values["source"] not in SOURCES:
        raise AlignmentError(f"{where}: source {values['source']!r} is not one of {', '.join(SOURCES)}")
    numbers = {}
    for column in ("dy_px", "dx_px", "confidence", "measured_dy_px", "measured_dx_px"):
        text = values[column] or ("nan" if column.startswith("measured") else "")
        try:
            numbers[column] = float(text)
        except ValueError:
            raise AlignmentError(f"{where}: column {column} is {text!r}, not a number") from None
        if column in ("dy_px", "dx_px") and not math.isfinite(numbers[column]):
            raise AlignmentError(f"{where}: column {column} is not finite")
    return OffsetRow(values["magnification"], values["well"], int(match.group(1)), values["stain"],
                     numbers["dy_px"], numbers["dx_px"], numbers["confidence"], values["source"],
                     numbers["measured_dy_px"], numbers["measured_dx_px"])


@dataclass(frozen=True)
class SiteOffsets:
    """Offsets per site and stain of one magnification: what a model bundle carries.

    ``sites[stain]["F007"] = (dy, dx)``.
    """

    magnification: str
    sites: Mapping[str, Mapping[str, tuple[float, float]]]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "offsets") -> "SiteOffsets":
        """Validate the JSON form (:meth:`OffsetTable.to_sites`)."""
        mag = data.get("magnification")
        if mag not in MAGNIFICATIONS:
            raise AlignmentError(f"{source}: 'magnification' is {mag!r}; expected one of {', '.join(MAGNIFICATIONS)}")
        sites = data.get("sites")
        if not isinstance(sites, Mapping):
            raise AlignmentError(f"{source}: missing 'sites' ({{stain: {{F001: [dy, dx]}}}})")
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for stain, per_site in sites.items():
            if stain not in TARGETS or not isinstance(per_site, Mapping):
                raise AlignmentError(f"{source}: 'sites.{stain}' is not a stain with a mapping of sites")
            for name, pair in per_site.items():
                if not _FIELD.match(str(name)) or not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise AlignmentError(f"{source}: 'sites.{stain}.{name}' must be a field F001 -> [dy, dx]")
            out[stain] = {f"F{int(_FIELD.match(str(k)).group(1)):03d}": (float(v[0]), float(v[1]))  # type: ignore[union-attr]
                          for k, v in per_site.items()}
        return cls(mag, out)

    @classmethod
    def from_table(cls, table: OffsetTable, magnification: str, *, source: str = "offsets") -> "SiteOffsets":
        """The site offsets of ``magnification`` in ``table``; refuses a table without that magnification."""
        if magnification not in table.magnifications:
            raise AlignmentError(f"{source}: offsets are for {', '.join(table.magnifications)}, "
                                 f"not {magnification}")
        return cls.from_dict(table.to_sites(magnification), source=source)

    def to_dict(self) -> dict[str, Any]:
        return {"magnification": self.magnification,
                "sites": {s: {k: [v[0], v[1]] for k, v in per.items()} for s, per in self.sites.items()}}

    def offset(self, stain: str, field: int) -> tuple[float, float] | None:
        return self.sites.get(stain, {}).get(f"F{field:03d}")

    def check_covers(self, magnification: str, fields: Iterable[int], stains: Iterable[str], *,
                     source: str = "offsets") -> None:
        """Refuse, in one line, offsets for another magnification or lacking a site or stain.

        Raises
        ------
        AlignmentError
            Naming the mismatch (magnification, or the first missing stain and sites).
        """
        if magnification != self.magnification:
            raise AlignmentError(f"{source}: offsets are for {self.magnification}, the plate is {magnification}")
        numbers = sorted(set(fields))
        for stain in stains:
            if stain not in self.sites:
                raise AlignmentError(f"{source}: no {magnification} {stain} offsets (it has "
                                     f"{', '.join(self.sites) or 'no stain'})")
            lacking = [n for n in numbers if f"F{n:03d}" not in self.sites[stain]]
            if lacking:
                raise AlignmentError(
                    f"{source}: no {magnification} {stain} offset for site(s) "
                    + ", ".join(f"F{n:03d}" for n in lacking[:5])
                    + f" (it has {len(self.sites[stain])} sites: another plate layout?)"
                )
