"""``vstain predict``: stain a plate from its brightfield with model bundles."""

from __future__ import annotations

import argparse
import sys

from vstain.commands.cluster_args import add_cluster_arguments, cluster_options
from vstain.errors import VstainError
from vstain.vocabulary import MAGNIFICATIONS, TTA_CHOICES

EXAMPLE = """\
example:
  vstain predict --models models/20x/ --input data/plate --output predicted/ --device cuda
  vstain predict --models C1_20x.safetensors C2_20x.safetensors --input flat/ --magnification 20x \\
      --output out/ --mode tiles --tta 8 --uncertainty
  vstain predict --models models/20x/ --input data/plate --output out/ --frame fluorescence  # docs/alignment.md
  torchrun --nproc-per-node 4 -m vstain predict --models models/20x --input plate --output out --device cuda
  vstain predict --models models/20x --input plate.ome.zarr --output pred.ome.zarr --workers 2
  vstain predict --models models/20x --input plate --output out --scheduler tcp://head:8786
  vstain predict --models models/20x --input plate --output out --calibration calibration.json

Writes one uint16 TIFF per field and stain, named as the CV7000 would name that channel (C01
nuclei, C02 lipids, C03 cytoplasm), flat in --output (in <mag>_images/ subfolders when the plate
holds several magnifications), plus predictions.json (models, settings, timings). Fields whose
outputs exist are skipped, so an interrupted run resumes; each TIFF records which model (SHA-256)
and settings made it, and a rerun with other models or settings stops rather than mixing them
(--overwrite recomputes every field). A field whose brightfield is missing or unreadable stops
the run before anything is computed, naming the file; --skip-bad-fields predicts the others and
lists the bad ones. With --uncertainty the TTA standard deviation is written under the same names
in <output>/uncertainty/. An --output ending in .zarr is written as an OME-Zarr HCS plate.

On CPUs, --workers N (N > 1), --scheduler or --cluster predict the fields on Dask workers (local
processes, an existing cluster, SLURM/PBS): each worker loads the bundles once from their files
(which it must be able to read) and writes its fields as it finishes them; outputs, resume and
predictions.json are the same as in one process. Without these options (or --workers 1) the
fields are predicted in this process. GPUs use torchrun, not Dask.

With --calibration (from vstain calibrate) every field is predicted with 8-fold TTA and gets
calibrated intervals: lower/ and upper/ pixel maps per stain, and intervals.csv (every field x
feature of the evaluation pipeline: prediction, lower, upper); vstain evaluate on fields with
real stains reports their coverage. It runs in this process (TIFF output) and refuses a
calibration made for other models, another magnification or another --alpha. docs/uncertainty.md.
"""


#: Library parameters whose flag has another name (see vstain.cli.command_flags).
PARAMETER_FLAGS = {"plate_dir": "--input"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict fluorescence stains for a plate",
        description="Predict the fluorescence stains of every field of a plate from its 7 brightfield planes.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", required=True, metavar="BUNDLE",
                        help="model bundles (.safetensors) or folders of them; one per stain or multi-output")
    parser.add_argument("--input", required=True, metavar="PLATE", help="plate folder (only brightfield C04 is read)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--magnification", choices=MAGNIFICATIONS,
                        help="magnification of a flat folder, or the one to predict from a multi-magnification plate")
    parser.add_argument("--mode", choices=("whole", "tiles", "reference"), default="whole",
                        help="whole field in one pass (default), large blended tiles, or the reference 512/256 tiling")
    parser.add_argument("--tile-size", type=int, metavar="PX", help="tile side for --mode tiles/reference")
    parser.add_argument("--overlap", type=int, metavar="PX", help="tile overlap for --mode tiles/reference")
    parser.add_argument("--margin", type=int, metavar="PX",
                        help="brightfield reflected around every side of a field as context for its edges "
                             "(default 64 with --mode whole/tiles, as in training's validation, 0 with "
                             "--mode reference; 0: none, as before 2026-12-04)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="compute precision (default fp32)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on GPUs)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (slow start, faster fields)")
    parser.add_argument("--tta", type=int, choices=TTA_CHOICES,
                        help="test-time augmentation: 1 (none) or 8 flips/rotations, averaged (default: what each "
                             "model chose on its validation fields, validation.tta in training, else 1; "
                             "8 with --calibration)")
    parser.add_argument("--uncertainty", action="store_true", help="with --tta 8, also write per-pixel std maps")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="tiles per network call (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="recompute fields whose outputs exist")
    parser.add_argument("--skip-bad-fields", action="store_true",
                        help="predict the good fields when some fields' brightfield is missing or unreadable "
                             "(default: stop, naming the bad file)")
    parser.add_argument("--frame", choices=("brightfield", "fluorescence"), default="brightfield",
                        help="brightfield: overlays the input (default); fluorescence: moved by the site offsets "
                             "the models were trained with (or --offsets) to match the instrument's stains")
    parser.add_argument("--offsets", metavar="CSV",
                        help="with --frame fluorescence: site offsets from vstain align instead of the models'")
    parser.add_argument("--calibration", metavar="JSON",
                        help="calibration.json from vstain calibrate: also write interval maps and intervals.csv")
    parser.add_argument("--alpha", type=float, metavar="A",
                        help="with --calibration: the level you expect it to have (refused if it differs)")
    parser.add_argument("--no-intensity-map", action="store_true",
                        help="write the networks' raw levels, ignoring the intensity maps bundles carry "
                             "(validation.intensity_map in training)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_arguments(parser, what="fields on CPUs; 1 = in this process")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.inference.distributed import rank_info
    from vstain.inference.predictor import Predictor, check_cluster_use

    cluster = cluster_options(args) if args.workers > 1 or args.scheduler or args.cluster else None
    if args.calibration is not None:
        if args.no_intensity_map:
            raise VstainError("--no-intensity-map cannot go with --calibration: the intervals were calibrated on "
                              "the bundles' mapped predictions")
        return _run_with_intervals(args, cluster is not None)
    if args.alpha is not None:
        raise VstainError("--alpha goes with --calibration (the level of the intervals)")
    if cluster is not None:  # before any model is loaded or device opened
        check_cluster_use(args.device, rank_info())
    predictor = Predictor(
        args.models,
        device=args.device,
        mode=args.mode,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        tta=args.tta,
        uncertainty=args.uncertainty,
        batch_size=args.batch_size,
        tile_size=args.tile_size,
        overlap=args.overlap,
        margin=args.margin,
        frame=args.frame,
        offsets=args.offsets,
        intensity_map=not args.no_intensity_map,
    )
    manifest = predictor.predict_plate(
        args.input, args.output, magnification=args.magnification, overwrite=args.overwrite,
        skip_bad_fields=args.skip_bad_fields, progress=not args.no_progress,
        cluster=cluster, announce=lambda line: print(line, flush=True),
    )
    fields = manifest["fields"]
    timings = manifest["timings"]
    rank = f" (rank {manifest['rank']}/{manifest['world_size']})" if manifest["world_size"] > 1 else ""
    bad = f", {fields['skipped_bad']} bad" if fields["skipped_bad"] else ""
    print(f"predicted {fields['predicted']} fields, skipped {fields['skipped_existing']} already done{bad}{rank}; "
          f"{timings['fields_per_s']:.2f} fields/s -> {args.output}")
    for step in manifest["oom_fallbacks"]:
        print(f"note: {step}")
    for bad in manifest["bad_fields"]:
        print(f"warning: skipped bad field {bad['field']}: {bad['problem']}", file=sys.stderr)
    return 0


def _run_with_intervals(args: argparse.Namespace, on_cluster: bool) -> int:
    from vstain.uncertainty.intervals import predict_intervals

    refused = [flag for flag, given in (("--workers/--scheduler/--cluster", on_cluster),
                                        ("an .ome.zarr --output", args.output.rstrip("/").endswith(".zarr")),
                                        ("--tta 1", args.tta == 1),
                                        ("--frame fluorescence", args.frame != "brightfield"),
                                        ("--skip-bad-fields", args.skip_bad_fields),
                                        ("--margin (intervals use the margin they were calibrated with)",
                                         args.margin is not None))
               if given]
    if refused:
        raise VstainError(f"--calibration predicts in this process into TIFF folders with --tta 8; "
                          f"it does not take {refused[0]}")
    manifest = predict_intervals(args.models, args.input, args.output, args.calibration, alpha=args.alpha,
                                 device=args.device, mode=args.mode, batch_size=args.batch_size,
                                 overwrite=args.overwrite, progress=not args.no_progress)
    fields = manifest["fields"]
    print(f"predicted {fields['predicted']} fields with {1 - manifest['alpha']:.0%} intervals, skipped "
          f"{fields['skipped_existing']} already done; {manifest['seconds']:.1f} s -> {args.output}")
    return 0
