"""Offsets of every field and stain of a plate: estimate per field, then resolve per site.

:func:`align_fields` reads each field once (brightfield stack and stains), estimates each stain's
offset (:func:`vstain.alignment.estimate.estimate_field`) and builds the
:class:`~vstain.alignment.offsets.OffsetTable` with its consensus fallbacks. Fields whose
estimate is not confident are named in :attr:`Alignment.warnings`. The fields are estimated here or,
as a plate job, on a Dask cluster (:mod:`vstain.plate.jobs`), each saved as it ends so that a killed
run resumes; the table is assembled in the fields' order, so it is the same either way.

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

import json
import os
import time
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from vstain.alignment.estimate import Offset, Reference, estimate_field, estimate_offset
from vstain.alignment.offsets import MIN_CONFIDENCE, RELATIVE, OffsetTable, resolve
from vstain.alignment.through_stain import (
    THROUGH,
    FieldMatch,
    PlateRelative,
    describe_standard_error,
    fields_relative,
    plate_relative,
)
from vstain.atomic import write_text_atomic
from vstain.errors import AlignmentError
from vstain.plate.index import Field
from vstain.vocabulary import TARGETS, OffsetsPer

if TYPE_CHECKING:
    from vstain.plate.jobs import ClusterOptions

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
    #: Fields whose estimates an interrupted run had saved (``results``), not estimated again.
    reused: int = 0


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


@dataclass(frozen=True)
class FieldEstimates:
    """One field's estimates: each stain's :class:`~vstain.alignment.estimate.Offset`, the relative
    matches of a sampled field (:func:`~vstain.alignment.through_stain.fields_relative`; empty
    otherwise) and the seconds the field took.
    """

    offsets: dict[str, Offset]
    matches: dict[str, FieldMatch | None]
    seconds: float


def estimate_one_field(
    field: Field, stains: Sequence[str], reference: Reference, sampled: bool,
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
) -> FieldEstimates | None:
    """Read one field and estimate its stains' offsets (and its relative matches if ``sampled``);
    None for a field without any of ``stains``. A plate job: it runs wherever :func:`align_fields` sends it.
    """
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    present = {s: field.read_target(s) for s in stains if s in field.targets}
    if not present:
        return None
    brightfield = field.read_brightfield()
    predicted = dict(predict(brightfield)) if predict is not None else {}
    # One BLAS thread: the upsampled cross-correlation (scikit-image) multiplies complex matrices,
    # and with two BLAS threads they round differently and can move an offset by one 0.1-px step
    # (measured on a 60x field): the same plate must give the same table in this process, on
    # single-threaded Dask workers and on any machine. The estimate is designed for one core.
    with threadpool_limits(limits=1, user_api="blas"):
        offsets, matches = _estimate(field, present, brightfield, predicted, reference, sampled)
    return FieldEstimates(offsets, matches, time.perf_counter() - start)


def _estimate(
    field: Field, present: Mapping[str, np.ndarray], brightfield: np.ndarray, predicted: Mapping[str, np.ndarray],
    reference: Reference, sampled: bool,
) -> tuple[dict[str, Offset], dict[str, FieldMatch | None]]:
    offsets = {s: estimate_offset(np.asarray(predicted[s], np.float32), np.asarray(image, np.float32))
               for s, image in present.items() if s in predicted}
    rest = {s: image for s, image in present.items() if s not in offsets}
    if rest:
        offsets.update(estimate_field(brightfield, rest, reference=reference))
    offsets = {s: offsets[s] for s in present}  # the table's stain order
    # Only stains no model registered: a model's prediction is the same modality already.
    through = {s: image for s, image in present.items() if s not in predicted}
    matches = fields_relative(through, field.magnification) if sampled else {}
    return offsets, matches


def align_fields(
    fields: Sequence[Field],
    *,
    stains: Iterable[str] | None = None,
    reference: Reference = DEFAULT_REFERENCE,
    min_confidence: float = MIN_CONFIDENCE,
    progress: Callable[[str], None] | None = None,
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
    per: OffsetsPer = "field",
    cluster: "ClusterOptions | None" = None,
    results: str | os.PathLike[str] | None = None,
    announce: Callable[[str], None] | None = None,
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
        Called with one line per field (in the order fields finish).
    predict
        ``brightfield (7, H, W) -> {stain: (H, W) image}``: a model's prediction in the brightfield
        frame (e.g. :meth:`vstain.inference.predictor.Predictor.predict_field` of bundles trained
        with alignment). The stains it returns are registered against it; the others against
        ``reference``. Runs in this process only (not with ``cluster``).
    per
        ``field``: confident fields keep their own estimate; ``site``: every field takes its site's
        consensus (:func:`vstain.alignment.offsets.resolve`).
    cluster
        Where the fields are estimated (:class:`~vstain.plate.jobs.ClusterOptions`: local worker
        processes, an existing Dask scheduler or a jobqueue cluster); default: here, one field after
        another, without Dask. The table is the same either way.
    results
        Folder for each field's estimates (``<mag>_<well>_F<nnn>.json``), saved as each field ends,
        so a killed run resumes with the fields not yet saved; a saved field is reused only while
        its images are unchanged and it was estimated with the same stains, reference and sampling.
        Not used with ``predict`` (a run against a model starts afresh).
    announce
        Receives one line naming the Dask cluster (and its dashboard), where there is one.

    Returns
    -------
    Alignment
        The offsets table, warnings naming low-confidence fields, and the seconds each field took.
    """
    wanted = tuple(stains) if stains is not None else TARGETS
    if predict is not None and cluster is not None:
        raise AlignmentError("aligning against a model's prediction runs in this process; "
                             "give no cluster (--workers, --scheduler, --cluster) with a model")
    sampled = _relative_sample(fields)
    # Estimates against a model's prediction are not saved: the file would not say which model, and a
    # rerun without it would take them for its own.
    store = Path(results) if results is not None and predict is None else None
    found: dict[int, FieldEstimates | None] = {}

    def keep(item: tuple[int, Field], estimates: FieldEstimates | None, *, saved: bool = False) -> None:
        number, f = item
        found[number] = estimates
        if store is not None and not saved:
            _save_estimates(store, f, _settings(wanted, reference, number in sampled), estimates)
        if progress is not None and estimates is not None and not saved:
            progress(f"{f.label}: " + ", ".join(
                f"{s} ({o.dy:+.2f}, {o.dx:+.2f}) conf {o.confidence:.2f}" for s, o in estimates.offsets.items()))

    todo = []
    for number, f in enumerate(fields):
        settings = _settings(wanted, reference, number in sampled)
        saved = _load_estimates(store, f, settings) if store is not None else None
        if saved is None:
            todo.append((number, f))
        else:
            keep((number, f), saved[1], saved=True)
    if cluster is None:
        for number, f in todo:
            keep((number, f), estimate_one_field(f, wanted, reference, number in sampled, predict))
    elif todo:
        from vstain.plate.jobs import map_fields, open_client

        with open_client(cluster, announce=announce) as client:
            map_fields(client, _estimate_job, todo, label=lambda item: item[1].label, on_result=keep,
                       arguments=(wanted, reference, frozenset(sampled)), desc="align")
    # In the fields' order, whatever order they finished in: the pooled relative offset sums the
    # fields' matches, and a sum in another order differs in its last digits.
    measured = {}
    seconds = []
    per_field: dict[tuple[str, str], list[FieldMatch | None]] = {}
    for number, f in enumerate(fields):
        estimates = found.get(number)
        if estimates is None:
            continue
        for stain, match in estimates.matches.items():
            per_field.setdefault((f.magnification, stain), []).append(match)
        for stain, o in estimates.offsets.items():
            measured[(f.magnification, f.well, f.field, stain)] = (o.dy, o.dx, o.confidence)
        seconds.append(estimates.seconds)
    relatives = {key: found for key, matches in per_field.items() if (found := plate_relative(matches))}
    confident = {key: (THROUGH[key[1]], r.dy, r.dx) for key, r in relatives.items() if r.trusted(min_confidence)}
    table = resolve(measured, min_confidence=min_confidence, per=per, relative=confident)
    warnings = low_confidence_warnings(table, min_confidence)
    for mag, stain in sorted(per_field):
        r = relatives.get((mag, stain))
        if r is None or not r.trusted(min_confidence):
            agree = "no field matched" if r is None else (
                f"{r.agreeing} of {r.sampled} fields agree on ({r.dy:+.2f}, {r.dx:+.2f}) px, "
                + describe_standard_error(r))
            warnings.append(f"{mag} {stain}: not registered through the {THROUGH[stain]} ({agree}; "
                            f"does the {THROUGH[stain]} stain show the {stain} as holes?)")
    return Alignment(table, warnings, seconds, relatives, reused=len(fields) - len(todo))


def _estimate_job(item: tuple[int, Field], stains: Sequence[str], reference: Reference,
                  sampled: frozenset[int]) -> FieldEstimates | None:
    """:func:`estimate_one_field` as a plate job (``item`` is the field's position and the field)."""
    number, field = item
    return estimate_one_field(field, stains, reference, number in sampled)


def _settings(stains: Sequence[str], reference: Reference, sampled: bool) -> dict[str, object]:
    return {"stains": list(stains), "reference": reference, "sampled": sampled}


def _estimates_file(folder: Path, field: Field) -> Path:
    return folder / f"{field.magnification}_{field.well}_F{field.field:03d}.json"


def _save_estimates(folder: Path, field: Field, settings: dict[str, object], estimates: FieldEstimates | None) -> None:
    """One field's estimates as JSON (floats written exactly), atomically."""
    record: dict[str, object] = {"signature": field.signature(), "settings": settings, "estimates": None}
    if estimates is not None:
        record["estimates"] = {
            "offsets": {s: [o.dy, o.dx, o.confidence, o.tiles] for s, o in estimates.offsets.items()},
            "matches": {s: None if m is None else {"covariance": m.covariance.tolist(), "variance": m.variance.tolist(),
                                                    "energy": m.energy, "factor": m.factor}
                        for s, m in estimates.matches.items()},
            "seconds": estimates.seconds,
        }
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(_estimates_file(folder, field), json.dumps(record) + "\n")


def _load_estimates(folder: Path, field: Field, settings: dict[str, object]
                    ) -> tuple[bool, FieldEstimates | None] | None:
    """``(True, estimates)`` saved for this field with these settings and unchanged images, else None."""
    try:
        record = json.loads(_estimates_file(folder, field).read_text(encoding="utf-8"))
        if record["signature"] != field.signature() or record["settings"] != settings:
            return None
        saved = record["estimates"]
        if saved is None:
            return True, None
        offsets = {s: Offset(float(v[0]), float(v[1]), float(v[2]), int(v[3])) for s, v in saved["offsets"].items()}
        matches = {s: None if m is None else FieldMatch(np.asarray(m["covariance"], np.float64),
                                                         np.asarray(m["variance"], np.float64),
                                                         float(m["energy"]), int(m["factor"]))
                   for s, m in saved["matches"].items()}
        return True, FieldEstimates(offsets, matches, float(saved["seconds"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # absent, half-written by an older version, or not ours: estimate the field again
