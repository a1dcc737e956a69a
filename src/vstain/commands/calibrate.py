"""``vstain calibrate``: conformal calibration of bundles (thin wrapper over src/vstain/uncertainty/calibrate.py)."""

from __future__ import annotations

import argparse

from vstain.vocabulary import CALIBRATION, MAGNIFICATIONS, SPLIT_SUBSETS

EXAMPLE = """\
examples:
  vstain calibrate --models models/20x/ --input data/plate --split split.csv --out calibration.json
  vstain calibrate --models models/20x/ --input calibration_plate --alpha 0.2 --out cal20.json

Predicts the calibration fields (the split's calibration subset, or every field of a plate of its
own) with 8-fold TTA, measures the prediction, each TTA variant and the real stains with the
evaluation pipeline, and writes calibration.json: per feature the conformal quantile q of
|prediction - truth| / sigma (sigma: the feature's spread over the TTA variants, with a floor);
per stain the multiplier lambda of the pixel intervals prediction +- lambda * max(spread, floor),
chosen by conformal risk control so that at most alpha of a new field's pixels fall outside, in
expectation. The file is tied to the bundles by their SHA-256; vstain predict --calibration uses
it. Per-field numbers are kept in <out>.parts/: an interrupted run resumes, and another --alpha
reuses them. Fields the models were trained or validated on are refused. See docs/uncertainty.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate conformal intervals for features and pixels on fields with real stains",
        description="Calibrate per-field feature intervals and per-pixel intervals of model bundles on "
        "calibration fields never used in training.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", required=True, metavar="BUNDLE",
                        help="bundles (or folders) predicting nuclei, lipids and cytoplasm at one magnification")
    parser.add_argument("--input", required=True, metavar="PLATE",
                        help="plate with brightfield and real stains (folder or OME-Zarr)")
    parser.add_argument("--out", required=True, metavar="JSON", help="where to write calibration.json")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="miscoverage: 0.1 gives 90%% intervals (default 0.1)")
    parser.add_argument("--split", metavar="CSV", help="split CSV; its --subset fields are used "
                        "(default: every field of --input)")
    parser.add_argument("--subset", choices=SPLIT_SUBSETS, default=CALIBRATION,
                        help=f"which subset of --split (default {CALIBRATION})")
    parser.add_argument("--magnification", choices=MAGNIFICATIONS, help="needed for a flat folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--mode", choices=("whole", "tiles", "reference"), default="whole",
                        help="tiling, as for vstain predict (default whole)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pixel sample of fields over 512x512")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.evaluation.coverage import COUNT_FEATURE
    from vstain.uncertainty.calibrate import calibrate

    calibration = calibrate(args.models, args.input, args.out, alpha=args.alpha, split=args.split,
                            subset=args.subset, magnification=args.magnification, device=args.device,
                            mode=args.mode, seed=args.seed, progress=not args.no_progress)
    given = [f for f in calibration.features.values() if f.quantile is not None]
    print(f"calibrated {len(calibration.fields)} {calibration.magnification} fields at alpha {calibration.alpha}: "
          f"{len(given)} of {len(calibration.features)} features have intervals")
    count = calibration.features.get(COUNT_FEATURE)
    if count is not None and count.quantile is not None:
        print(f"  {COUNT_FEATURE}: q = {count.quantile:.3g} "
              f"(interval = prediction +- q * max(TTA spread, {count.floor:.3g}))")
    for stain, pixels in calibration.pixels.items():
        print(f"  {stain} pixels: lambda = {pixels.multiplier:.3g}, floor {pixels.floor:.3g} counts, "
              f"calibration risk {pixels.calibration_risk:.3f}")
    lacking = [name for name, f in calibration.features.items() if f.quantile is None]
    if lacking:
        print(f"note: no interval for {len(lacking)} features ({lacking[0]}: "
              f"{calibration.features[lacking[0]].reason})")
    print(f"wrote {args.out}")
    return 0
