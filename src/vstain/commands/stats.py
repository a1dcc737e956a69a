"""``vstain stats PLATE --out stats.json``: exact intensity statistics of (a split of) a plate.

Also makes train/validation splits (``--make-split``), since statistics belong to the training subset.
"""

from __future__ import annotations

import argparse

from vstain.commands.cluster_args import add_cluster_arguments, cluster_options
from vstain.vocabulary import MAGNIFICATIONS, SPLIT_SUBSETS, TRAIN, VALIDATION

EXAMPLE = """\
examples:
  vstain stats data/plate --out stats.json
  vstain stats data/plate --out stats.json --split split.csv --subset train
  # make a split (leave wells out, or N random fields per magnification) and describe its train subset
  vstain stats data/plate --make-split split.csv --holdout-wells B03 --out stats.json
  vstain stats data/plate --make-split split.csv --holdout-fields reference --seed 0   # 3/4/6 at 20x/40x/60x
  vstain stats data/plate.ome.zarr --out stats.json --workers 2        # an OME-Zarr plate, 2 processes

Statistics per magnification and channel (C04Z01..C04Z07, C01, C02, C03): min, max, mean, std and
the 0.01/0.1/1/50/99/99.9/99.99 percentiles, exact (65536-bin histograms, one image in memory at a
time). A split CSV has columns magnification,well,field,subset; subset is train (fitted),
validation (picks checkpoints), test or calibration (never read by training); see docs/splits.md.
--make-split writes train and validation rows. PLATE is a CV7000 folder or an OME-Zarr plate.
Fields are read on a Dask cluster; each field's histograms are kept in OUT.fields/ until the
statistics are written, so an interrupted run resumes.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="intensity statistics of a plate (and train/validation splits)",
        description="Compute exact per-channel statistics of a plate, optionally on one subset of a split; "
        "optionally make the split first.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("plate", help="plate folder (<plate>/<mag>_images/, a flat folder of TIFFs) or OME-Zarr plate")
    parser.add_argument("--out", metavar="JSON", help="where to write the statistics (JSON)")
    parser.add_argument(
        "--magnification",
        choices=MAGNIFICATIONS,
        help="only this magnification (required for a flat folder)",
    )
    parser.add_argument("--split", metavar="CSV", help="describe only the fields of --subset in this split file")
    parser.add_argument(
        "--subset", choices=SPLIT_SUBSETS, default=TRAIN, help=f"subset of the split (default: {TRAIN})"
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="use the valid fields of a plate that has errors (default: refuse; see `vstain check`)",
    )
    group = parser.add_argument_group("making a split")
    group.add_argument("--make-split", metavar="CSV",
                       help="write a train/validation split of the plate's fields to CSV")
    hold = group.add_mutually_exclusive_group()
    hold.add_argument("--holdout-wells", nargs="+", metavar="WELL", help="wells whose fields are all validation")
    hold.add_argument(
        "--holdout-fields",
        metavar="N|reference",
        help="random validation fields per magnification: a number, or 'reference' for 3/4/6 at 20x/40x/60x",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of --holdout-fields (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vstain.errors import VstainError
    from vstain.plate.index import index_plate
    from vstain.plate.splits import REFERENCE_HOLDOUT, Split, leave_wells_out, random_fields_out
    from vstain.plate.stats import compute_stats

    if not args.out and not args.make_split:
        raise VstainError("nothing to do: give --out (statistics) and/or --make-split (a split CSV)")
    if args.make_split and args.split:
        raise VstainError("give either --split (an existing split) or --make-split (a new one), not both")
    if args.make_split and not (args.holdout_wells or args.holdout_fields):
        raise VstainError("--make-split needs --holdout-wells WELL... or --holdout-fields N|reference")
    if (args.holdout_wells or args.holdout_fields) and not args.make_split:
        raise VstainError("--holdout-wells/--holdout-fields need --make-split CSV (where to write the split)")

    for option, value in (("--out", args.out), ("--make-split", args.make_split)):
        if value and Path(value).is_dir():
            raise VstainError(f"{value}: is a folder; {option} needs a file name")

    index = index_plate(args.plate, magnification=args.magnification)
    if index.errors and not args.skip_invalid:
        index.raise_for_errors()
    fields = index.fields
    split = None
    if args.make_split:
        keys = [f.key for f in fields]
        if args.holdout_wells:
            split = leave_wells_out(keys, args.holdout_wells)
        else:
            split = random_fields_out(keys, _holdout_count(args.holdout_fields, REFERENCE_HOLDOUT), seed=args.seed)
        split.save(args.make_split)
        counts = split.counts()
        summary = ", ".join(
            f"{mag} {counts.get((mag, TRAIN), 0)} {TRAIN} / {counts.get((mag, VALIDATION), 0)} {VALIDATION}"
            for mag in index.magnifications
        )
        print(f"wrote {args.make_split}: {summary}")
    elif args.split:
        split = Split.load(args.split)
    if not args.out:
        return 0
    source: dict[str, object] = {"plate": str(index.root)}
    if split is not None:
        wanted = split.keys(args.subset)
        split.check_fields([f.key for f in fields], source=args.split or args.make_split,
                           magnifications=index.magnifications)
        fields = [f for f in fields if f.key in wanted]
        source |= {"split": str(args.split or args.make_split), "subset": args.subset}
    import shutil

    partial = Path(args.out).with_name(Path(args.out).name + ".fields")
    stats = compute_stats(fields, source=source, cluster=cluster_options(args), results=partial,
                          progress=not args.no_progress)
    stats.save(args.out)
    shutil.rmtree(partial, ignore_errors=True)
    print(f"wrote {args.out} ({len(fields)} fields)")
    for mag, per_channel in stats.to_dict()["stats"].items():
        for key, s in per_channel.items():
            p = s["percentiles"]
            print(
                f"  {mag} {key:6s} min {s['min']:7.0f}  p0.01 {p['0.01']:9.1f}  mean {s['mean']:9.1f}  "
                f"std {s['std']:8.1f}  p99.99 {p['99.99']:9.1f}  max {s['max']:7.0f}"
            )
    return 0


def _holdout_count(text: str, reference: dict[str, int]) -> int | dict[str, int]:
    from vstain.errors import VstainError

    if text == "reference":
        return dict(reference)
    try:
        n = int(text)
    except ValueError:
        raise VstainError(f"--holdout-fields {text!r}: give a number of fields or 'reference'") from None
    if n < 1:
        raise VstainError(f"--holdout-fields {n}: hold out at least one field")
    return n
