"""Offsets of every field and stain of a plate: estimate per field, then resolve per site.

:func:`align_fields` reads each field once (brightfield stack and stains), estimates each stain's
offset (:func:`vstain.alignment.estimate.estimate_field`) and builds the
:class:`~vstain.alignment.offsets.OffsetTable` with its consensus fallbacks. Fields whose
estimate is not confident are named in :attr:`Alignment.warnings`.

Given ``predict`` (a trained model's prediction of the stains, in the brightfield frame), the
stains it predicts are registered against that prediction instead: the same modality as the stain,
so also stains that brightfield shows too faintly for a linear reference (nuclei) are measured
(docs/alignment.md, "Aligning with a model").

Without a model, the nuclei are registered through the cytoplasm stain, where they leave holes
(:mod:`vstain.alignment.through_stain`): the offset between the two stains is measured on up to
:data:`RELATIVE_FIELDS` fields of each magnification, pooled into one, and used where the nuclei's
own estimate is not confident; a warning says where the fields do not agree on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dataclass_field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from vstain.alignment.estimate import Reference, estimate_field, estimate_offset
from vstain.alignment.offsets import MIN_CONFIDENCE, RELATIVE, OffsetTable, resolve
from vstain.alignment.through_stain import THROUGH, FieldMatch, PlateRelative, fields_relative, plate_relative
from vstain.plate.index import Field
from vstain.vocabulary import TARGETS, OffsetsPer

#: The relative offset of the nuclei against the cytoplasm (one per plate and magnification) is
#: measured on at most this many fields, spread evenly: one number per plate needs no more, and a whole
#: 384-well plate need not pay about a second per full 20x field for it (docs/alignment.md).
RELATIVE_FIELDS = 24
#: The reference image :func:`align_fields` uses by default (measured: docs/alignment.md).
DEFAULT_REFERENCE: Reference = "prediction"


@dataclass
class Alignment:
    """What :func:`align_fields` found: the table, warnings naming uncertain fields, seconds per field.

    ``relatives`` maps ``(magnification, stain)`` to the plate's offset of that stain against the
    stain of :data:`~vstain.alignment.through_stain.THROUGH` (used only where confident).
    """

    table: OffsetTable
    warnings: list[str] = dataclass_field(default_factory=list)
    seconds: list[float] = dataclass_field(default_factory=list)
    relatives: dict[tuple[str, str], PlateRelative] = dataclass_field(default_factory=dict)


def low_confidence_warnings(table: OffsetTable, min_confidence: float = MIN_CONFIDENCE) -> list[str]:
    """One line per magnification and stain with fields whose own estimate was not confident, naming them."""
    lines = []
    for mag in table.magnifications:
        for stain in table.stains:
            rows = [r for r in table.rows if r.magnification == mag and r.stain == stain]
            weak = [r for r in rows if not r.confidence >= min_confidence]
            if not weak:
                continue
            names = ", ".join(f"{r.well} F{r.field:03d}" for r in weak[:8]) + (" ..." if len(weak) > 8 else "")
            fallback = sorted({r.source for r in weak})
            described = [f"offset through the {THROUGH[stain]}" if s == RELATIVE else s for s in fallback]
            what = ("no field gave a confident offset: a blank or featureless stain? offsets set to 0"
                    if fallback == ["none"] else f"they use the {' / '.join(described)}")
            lines.append(f"{mag} {stain}: low confidence in {len(weak)} of {len(rows)} fields ({names}); {what}")
    return lines


def _relative_sample(fields: Sequence[Field]) -> set[int]:
    """Positions of the fields the stains' relative offsets are measured on: evenly spread, at most
    :data:`RELATIVE_FIELDS` per magnification (the offset between two stains is one number per plate).
    """
    chosen: set[int] = set()
    for mag in {f.magnification for f in fields}:
        positions = [i for i, f in enumerate(fields) if f.magnification == mag]
        picks = np.unique(np.linspace(0, len(positions) - 1, min(len(positions), RELATIVE_FIELDS)).round().astype(int))
        chosen.update(positions[i] for i in picks)
    return chosen


def align_fields(
    fields: Sequence[Field],
    *,
    stains: Iterable[str] | None = None,
    reference: Reference = DEFAULT_REFERENCE,
    min_confidence: float = MIN_CONFIDENCE,
    progress: Callable[[str], None] | None = None,
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
    per: OffsetsPer = "field",
) -> Alignment:
    """Estimate the offset of each stain of each field against its brightfield, then resolve per site.

    Parameters
    ----------
    fields
        Fields with their brightfield stack and stains (:func:`vstain.plate.index.index_plate`).
    stains
        Stains to align (default: every stain a field has).
    reference
        What the stains are correlated with (:mod:`vstain.alignment.estimate`).
    min_confidence
        Estimates below this confidence fall back to the site consensus.
    progress
        Called with one line per field.
    predict
        ``brightfield (7, H, W) -> {stain: (H, W) image}``: a model's prediction in the brightfield
        frame (e.g. :meth:`vstain.inference.predictor.Predictor.predict_field` of bundles trained
        with alignment). The stains it returns are registered against it; the others against
        ``reference``.
    per
        ``field``: confident fields keep their own estimate; ``site``: every field takes its site's
        consensus (:func:`vstain.alignment.offsets.resolve`).

    Returns
    -------
    Alignment
        The offsets table, warnings naming low-confidence fields, and the seconds each field took.
    """
    wanted = tuple(stains) if stains is not None else TARGETS
    measured = {}
    seconds = []
    per_field: dict[tuple[str, str], list[FieldMatch | None]] = {}
    sampled = _relative_sample(fields)
    for number, f in enumerate(fields):
        start = time.perf_counter()
        present = {s: f.read_target(s) for s in wanted if s in f.targets}
        if not present:
            continue
        brightfield = f.read_brightfield()
        predicted = dict(predict(brightfield)) if predict is not None else {}
        offsets = {s: estimate_offset(np.asarray(predicted[s], np.float32), np.asarray(image, np.float32))
                   for s, image in present.items() if s in predicted}
        rest = {s: image for s, image in present.items() if s not in offsets}
        if rest:
            offsets.update(estimate_field(brightfield, rest, reference=reference))
        offsets = {s: offsets[s] for s in present}  # the table's stain order
        # Only stains no model registered: a model's prediction is the same modality already.
        through = {s: image for s, image in present.items() if s not in predicted}
        for stain, match in (fields_relative(through, f.magnification) if number in sampled else {}).items():
            per_field.setdefault((f.magnification, stain), []).append(match)
        for stain, o in offsets.items():
            measured[(f.magnification, f.well, f.field, stain)] = (o.dy, o.dx, o.confidence)
        seconds.append(time.perf_counter() - start)
        if progress is not None:
            progress(f"{f.label}: " + ", ".join(
                f"{s} ({o.dy:+.2f}, {o.dx:+.2f}) conf {o.confidence:.2f}" for s, o in offsets.items()))
    relatives = {key: found for key, matches in per_field.items() if (found := plate_relative(matches))}
    confident = {key: (THROUGH[key[1]], r.dy, r.dx) for key, r in relatives.items() if r.confidence >= min_confidence}
    table = resolve(measured, min_confidence=min_confidence, per=per, relative=confident)
    warnings = low_confidence_warnings(table, min_confidence)
    for mag, stain in sorted(per_field):
        r = relatives.get((mag, stain))
        if r is None or r.confidence < min_confidence:
            agree = "no field matched" if r is None else (
                f"{r.agreeing} of {r.sampled} fields agree on ({r.dy:+.2f}, {r.dx:+.2f}) px")
            warnings.append(f"{mag} {stain}: not registered through the {THROUGH[stain]} ({agree}; "
                            f"does the {THROUGH[stain]} stain show the {stain} as holes?)")
    return Alignment(table, warnings, seconds, relatives)
