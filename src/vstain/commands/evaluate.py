"""``vstain evaluate``: the challenge metric, CellProfiler-equivalent tables and an HTML report.

A thin wrapper over :func:`vstain.evaluation.folders.evaluate_folders`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from vstain.commands.cluster_args import add_cluster_arguments, cluster_options
from vstain.vocabulary import MAGNIFICATIONS

if TYPE_CHECKING:  # heavy imports stay inside functions, so `vstain --help` stays fast
    import pandas as pd

    from vstain.evaluation.metric import ChallengeScore

EXAMPLE = """\
example:
  vstain evaluate --truth data/plate --pred runs/pred --magnification 20x --out runs/eval20x
  vstain evaluate --truth data/plate --pred runs/pred --out runs/eval --workers 2   # every <mag>_images
  vstain evaluate --truth plate.ome.zarr --pred pred.ome.zarr --out runs/eval --scheduler tcp://head:8786

--truth and --pred are flat folders of C01/C02/C03 triplets (give --magnification) or plates with
<mag>_images folders; fields are matched by (well, field) from the CV7000 names, brightfield is
ignored. Writes into --out: features_truth.csv and features_pred.csv (the 102 columns of
CellProfiler's Adipocytes_Image.csv), objects_{truth,pred}_<object>.csv, scores.json,
report.html and residual_offsets.csv (the offset left between prediction and truth per field and
stain, summarised in report.html; a warning when it exceeds 0.5 px: the plate looks misaligned,
docs/alignment.md). When --pred holds intervals from vstain predict --calibration, also
coverage.json and a coverage section in report.html (docs/uncertainty.md).
With several magnifications the CSVs go to --out/<mag>/. Either side may be an
OME-Zarr HCS plate. Each field's measurements are saved under --out/fields/ as soon as they are
done: a rerun after a crash or kill measures only the fields not saved yet.
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
    parser.add_argument("--truth", required=True, metavar="PLATE",
                        help="the real C01/C02/C03 images: a folder or an OME-Zarr plate")
    parser.add_argument("--pred", required=True, metavar="PLATE",
                        help="the predicted images (same names or fields): a folder or an OME-Zarr plate")
    parser.add_argument(
        "--magnification",
        choices=MAGNIFICATIONS,
        help="magnification (required for flat folders; default: every <mag>_images of --truth)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument(
        "--report-fields",
        type=int,
        default=3,
        metavar="K",
        help="fields shown as image panels in report.html (default 3)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cluster_arguments(parser, what="fields")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.alignment.residual import residual_offsets, residual_section
    from vstain.evaluation.folders import evaluate_folders

    residuals = {}

    def residual_sections(_scores: Sequence["ChallengeScore"]) -> list:
        # Measured when the report is written (after the folders were checked), so it can show them.
        residuals["table"] = table = residual_offsets(args.truth, args.pred, magnification=args.magnification)
        return [residual_section(table)] if len(table) else []

    scores = evaluate_folders(
        args.truth,
        args.pred,
        out=args.out,
        magnification=args.magnification,
        workers=args.workers,
        report_fields=args.report_fields,
        cluster=cluster_options(args),
        progress=not args.no_progress,
        announce=lambda line: print(line, flush=True),
        report_sections=residual_sections,
    )
    _print_summary(scores, Path(args.out))
    _print_coverage(Path(args.out) / "coverage.json")
    _write_residual_offsets(residuals["table"], Path(args.out))
    return 0


def _print_coverage(path: Path) -> None:
    """One line per magnification when the prediction carried intervals (vstain predict --calibration)."""
    import json

    from vstain.evaluation.coverage import COUNT_FEATURE

    if not path.is_file():
        return
    for mag, result in json.loads(path.read_text()).items():
        alpha = result.get("alpha")
        target = f"target {1 - alpha:.2f}" if alpha is not None else "target not recorded"
        overall = result["overall"]
        count = result["features"].get(COUNT_FEATURE, {})
        parts = [f"features {overall.get('feature_coverage') or float('nan'):.3f}"]
        if count:
            parts.append(f"nuclei count {count['coverage']:.3f} (mean width {count['mean_width']:.3g})")
        parts += [f"pixels {stain} {values['pixel_coverage']:.3f}" for stain, values in result["stains"].items()
                  if values.get("pixel_coverage") is not None]
        print(f"{mag} interval coverage ({target}, {overall.get('fields', 0)} fields): " + ", ".join(parts))
    print(f"wrote {path}")


def _write_residual_offsets(table: "pd.DataFrame", out: Path) -> None:
    """Write residual_offsets.csv: the offset left between prediction and truth per field (docs/alignment.md)."""
    import sys

    from vstain.alignment.residual import residual_warnings
    from vstain.atomic import write_text_atomic

    path = write_text_atomic(out / "residual_offsets.csv", table.to_csv(index=False))
    print(f"wrote {path} (offset of the real stains against the predictions, per field)")
    for line in residual_warnings(table):
        print(f"warning: {line}", file=sys.stderr)


def _print_summary(scores: Sequence["ChallengeScore"], out: Path) -> None:
    from vstain.evaluation.metric import dominance_note, total_score

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
        note = dominance_note(fw)
        if note:
            print(f"{s.magnification}: {note} (report.html, 'Feature error')")
    print(f"wrote {out / 'scores.json'} and {out / 'report.html'}")
