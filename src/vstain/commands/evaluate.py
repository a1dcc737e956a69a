"""``vstain evaluate``: the challenge metric, CellProfiler-equivalent tables and an HTML report."""

from __future__ import annotations

import argparse

from vstain.vocabulary import MAGNIFICATIONS
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # heavy imports stay inside functions, so `vstain --help` stays fast
    from vstain.evaluation.metric import ChallengeScore
    from vstain.evaluation.table import MeasureFunction

EXAMPLE = """\
example:
  vstain evaluate --truth data/plate --pred runs/pred --magnification 20x --out runs/eval20x
  vstain evaluate --truth data/plate --pred runs/pred --out runs/eval --workers 2   # every <mag>_images

--truth and --pred are flat folders of C01/C02/C03 triplets (give --magnification) or plates with
<mag>_images folders; fields are matched by (well, field) from the CV7000 names, brightfield is
ignored. Writes into --out: features_truth.csv and features_pred.csv (the 102 columns of
CellProfiler's Adipocytes_Image.csv), objects_{truth,pred}_<object>.csv, scores.json and
report.html. With several magnifications the CSVs go to --out/<mag>/.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted stains against the real ones (challenge metric + report)",
        description="Measure target and predicted fields as the challenge's CellProfiler pipelines do, "
        "score them with the challenge metric (pixelwise + featurewise relative MAE) and write tables, "
        "scores.json and a self-contained report.html.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--truth", required=True, metavar="DIR", help="folder of the real C01/C02/C03 images")
    parser.add_argument("--pred", required=True, metavar="DIR", help="folder of the predicted images (same names)")
    parser.add_argument(
        "--magnification",
        choices=MAGNIFICATIONS,
        help="magnification (required for flat folders; default: every <mag>_images of --truth)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes measuring fields (default 1)")
    parser.add_argument(
        "--report-fields",
        type=int,
        default=3,
        metavar="K",
        help="fields shown as image panels in report.html (default 3)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.errors import VstainError

    if args.workers < 1:
        raise VstainError(f"--workers must be at least 1, got {args.workers}")
    if args.report_fields < 0:
        raise VstainError(f"--report-fields must be 0 or more, got {args.report_fields}")
    scores = evaluate_folders(
        args.truth,
        args.pred,
        out=args.out,
        magnification=args.magnification,
        workers=args.workers,
        report_fields=args.report_fields,
    )
    _print_summary(scores, Path(args.out))
    return 0


def evaluate_folders(
    truth: str | os.PathLike[str],
    pred: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    magnification: str | None = None,
    workers: int = 1,
    report_fields: int = 3,
    measure: "MeasureFunction | None" = None,
) -> list["ChallengeScore"]:
    """Measure, score and report ``pred`` against ``truth``; returns one score per magnification.

    See the command's help for the folder layouts and the files written into ``out``.
    """
    from vstain.evaluation.metric import ChallengeScore, PixelErrorAccumulator, featurewise_score, write_scores
    from vstain.evaluation.report import FieldPanel, write_report
    from vstain.evaluation.table import FeatureTable, find_fields
    from vstain.errors import PlateError
    from vstain.plate.index import image_folders

    truth, pred, out = Path(truth), Path(pred), Path(out)
    for role, folder in (("--truth", truth), ("--pred", pred)):
        if not folder.is_dir():
            raise PlateError(f"{folder}: no such folder ({role})")
    if out.exists() and not out.is_dir():
        raise PlateError(f"{out}: exists and is not a folder (--out)")
    magnifications = [m for m, _ in image_folders(truth, magnification)]
    scores: list[ChallengeScore] = []
    panels: dict[str, list[FieldPanel]] = {}
    for mag in magnifications:
        mag_out = out if len(magnifications) == 1 else out / mag
        truth_fields, truth_notes = find_fields(truth, magnification=mag)
        pred_fields, pred_notes = find_fields(pred, magnification=mag)
        pred_by_key = {f.key: f for f in pred_fields}
        matched = [f for f in truth_fields if f.key in pred_by_key]
        shown = [f.key for f in matched[:report_fields]]
        _check_sizes(matched, pred_by_key)  # before the slow part

        truth_table = FeatureTable.measure(
            truth_fields, magnification=mag, workers=workers, measure=measure, keep_labels=shown
        )
        pred_table = FeatureTable.measure(
            pred_fields, magnification=mag, workers=workers, measure=measure, keep_labels=shown
        )

        pixels = PixelErrorAccumulator()
        for images in matched:
            target, guess = images.read(), pred_by_key[images.key].read()
            pixels.add(target, guess, label=images.label)
            if images.key in shown:
                panels.setdefault(mag, []).append(
                    FieldPanel(
                        label=f"{mag} {images.label}",
                        truth=target,
                        pred=guess,
                        truth_labels=truth_table.labels.get(images.key, {}),
                        pred_labels=pred_table.labels.get(images.key, {}),
                    )
                )

        warnings = (
            [f"truth: {w}" for w in truth_notes + truth_table.warnings]
            + [f"prediction: {w}" for w in pred_notes + pred_table.warnings]
        )
        scores.append(
            ChallengeScore(
                magnification=mag,
                pixelwise=pixels.result(),
                featurewise=featurewise_score(truth_table.frame, pred_table.frame),
                warnings=tuple(warnings),
            )
        )
        truth_table.write_csv(mag_out / "features_truth.csv")
        pred_table.write_csv(mag_out / "features_pred.csv")
        truth_table.write_objects(mag_out, prefix="objects_truth")
        pred_table.write_objects(mag_out, prefix="objects_pred")

    write_scores(out / "scores.json", scores)
    write_report(
        out / "report.html",
        scores,
        panels=panels,
        sources={"truth": str(truth), "prediction": str(pred)},
    )
    return scores


def _check_sizes(matched, pred_by_key) -> None:
    """Refuse a prediction whose image size differs from its target's, naming the file."""
    import numpy as np

    from vstain.errors import PlateError
    from vstain.plate.tiff import tiff_header

    for images in matched:
        predicted = pred_by_key[images.key]
        for channel, path in images.paths.items():
            want, got = tiff_header(path), tiff_header(predicted.paths[channel])
            if want[0] != got[0]:
                raise PlateError(
                    f"{predicted.paths[channel]}: size {'x'.join(map(str, got[0]))} differs from the "
                    f"target's {'x'.join(map(str, want[0]))}"
                )
            if got[1] != np.uint16 or want[1] != np.uint16:
                bad = path if want[1] != np.uint16 else predicted.paths[channel]
                raise PlateError(f"{bad}: {want[1] if bad == path else got[1]} data; expected uint16 counts")


def _print_summary(scores: Sequence["ChallengeScore"], out: Path) -> None:
    from vstain.evaluation.metric import total_score

    def num(value: float) -> str:
        return f"{value:.4f}" if value == value and abs(value) != float("inf") else "n/a"

    print(f"{'magnification':<14}{'fields':>7}{'pixelwise':>11}{'featurewise':>13}{'score':>9}")
    for s in scores:
        print(f"{s.magnification:<14}{s.n_fields:>7}{num(s.pixelwise.value):>11}{num(s.featurewise.value):>13}{num(s.score):>9}")
    print(f"{'total':<14}{sum(s.n_fields for s in scores):>7}{'':>11}{'':>13}{num(total_score(scores)):>9}")
    for s in scores:
        fw = s.featurewise
        notes = []
        if fw.missing_predictions:
            notes.append(f"{len(fw.missing_predictions)} missing predictions")
        if fw.extra_predictions:
            notes.append(f"{len(fw.extra_predictions)} extra predictions")
        if fw.excluded_features:
            notes.append(f"{len(fw.excluded_features)} features excluded")
        if fw.prediction_counted_as_zero:
            notes.append(f"{sum(map(len, fw.prediction_counted_as_zero.values()))} NaN predictions counted as 0")
        if s.warnings:
            notes.append(f"{len(s.warnings)} warnings")
        if notes:
            print(f"{s.magnification}: " + ", ".join(notes) + " (see scores.json)")
    print(f"wrote {out / 'scores.json'} and {out / 'report.html'}")
