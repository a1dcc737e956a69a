"""``vstain align PLATE --out offsets.csv``: the brightfield-to-stain offset of every field and stain."""

from __future__ import annotations

import argparse
from typing import Any

from vstain.commands.cluster_args import add_cluster_arguments, cluster_options
from vstain.vocabulary import MAGNIFICATIONS, OFFSETS_PER, TARGETS

EXAMPLE = """\
examples:
  vstain align data/plate --out offsets.csv                  # also writes offsets.png (offset vs site)
  vstain align data/plate --out offsets.csv --magnification 20x --stains lipids cytoplasm
  vstain align data/plate --out offsets.csv --model runs/nuclei/model.safetensors   # nuclei against a model
  vstain align data/plate --out offsets.csv --per site       # every field takes its site's consensus
  vstain align /shared/plate --out offsets.csv --workers 4   # fields on 4 local processes
  vstain align /shared/plate --out offsets.csv --scheduler tcp://head:8786   # on a Dask cluster

One row per field and stain: magnification, well, field, stain, dy_px, dx_px, confidence, source,
measured_dy_px, measured_dx_px. Sign convention: a structure at brightfield pixel (y, x) is at stain
pixel (y - dy, x - dx). source says where dy_px, dx_px come from: measured (the field's own
estimate, confidence >= 0.5), site consensus (median over the wells at that field number), relative
(nuclei: the field's cytoplasm offset plus the plate's offset between the two stains, measured on
the holes the nuclei leave in the cytoplasm stain; used where at least half of the sampled fields
agree with it, or where its bootstrap standard error over the fields is at most 0.2 px), field
consensus (the field's other stains), stain consensus, or none (0). Prints a summary per site and
the plate's nuclei-to-cytoplasm offset, and warns, naming the fields, where estimates were not
confident (e.g. a blank stain). With --per site every field takes the median of the confident wells
at its site (source: site consensus), its own estimate included: the offset is a property of the
optics, and on a plate with several wells the median is steadier than one field's estimate. Each
field's estimates are saved as it ends (in OUT.fields/, removed when the CSV is written), so an
interrupted run resumes where it stopped. See docs/alignment.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="estimate the brightfield-to-stain offset of every field and site",
        description="Estimate the subpixel offset of each stain against the brightfield stack, per field and "
        "per site (field number), with a confidence; write the offsets CSV and a plot.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("plate", help="plate folder (<plate>/<mag>_images/, a flat folder of TIFFs) or OME-Zarr plate")
    parser.add_argument("--out", required=True, metavar="CSV", help="where to write the offsets (CSV)")
    parser.add_argument("--magnification", choices=MAGNIFICATIONS,
                        help="only this magnification (required for a flat folder)")
    parser.add_argument("--stains", nargs="+", choices=TARGETS, metavar="STAIN",
                        help=f"stains to align (default: all of {', '.join(TARGETS)} present)")
    parser.add_argument("--model", nargs="+", metavar="BUNDLE",
                        help="register the stains these bundles predict against their prediction (bundles "
                             "trained with data.alignment auto or FILE, so they predict in the brightfield frame); "
                             "only fields of their magnification")
    parser.add_argument("--per", choices=OFFSETS_PER, default="field",
                        help="field (default): a confident field keeps its own estimate; site: every field takes "
                             "its site's consensus over the wells")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG next to the CSV")
    parser.add_argument("--quiet", action="store_true", help="no line per field")
    add_cluster_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from vstain.alignment.offsets import MIN_CONFIDENCE
    from vstain.alignment.plate import align_fields
    from vstain.alignment.report import plot_offsets, site_summary
    from vstain.alignment.through_stain import THROUGH, describe_standard_error
    from vstain.errors import PlateError, VstainError
    from vstain.plate.index import index_plate

    out = Path(args.out)
    if out.is_dir():
        raise VstainError(f"{out}: is a folder; --out needs a file name")
    # Without any of the cluster options the fields are estimated here, one after another (no Dask).
    cluster = (cluster_options(args) if args.workers != 1 or args.scheduler or args.cluster or args.dashboard
               else None)
    if cluster is not None and args.model:
        raise VstainError("--model aligns in this process: drop --workers/--scheduler/--cluster/--dashboard")
    predictor = _predictor(args.model, args.magnification) if args.model else None
    magnification = predictor.magnifications[0] if predictor is not None else args.magnification
    index = index_plate(args.plate, magnification=magnification)
    fields = [f for f in index.select(magnification=magnification) if f.targets]
    if not fields:
        index.raise_for_errors()
        raise PlateError(f"{index.root}: no {magnification + ' ' if magnification else ''}field with brightfield "
                         "and a stain to align")
    import shutil

    partial = out.with_name(out.name + ".fields")
    alignment = align_fields(fields, stains=args.stains, progress=None if args.quiet else print,
                             predict=predictor.predict_field if predictor is not None else None, per=args.per,
                             cluster=cluster, results=partial, announce=print)
    if alignment.reused:
        print(f"{alignment.reused} of {len(fields)} fields reused from the interrupted run in {partial}")
    alignment.table.save(out)
    shutil.rmtree(partial, ignore_errors=True)
    summary = site_summary(alignment.table)
    print(summary.to_string(index=False))
    for (mag, stain), r in sorted(alignment.relatives.items()):
        used = "used where its own estimate is not confident" if r.trusted(MIN_CONFIDENCE) else "not used"
        print(f"{mag} {stain} through the {THROUGH[stain]}: ({r.dy:+.2f}, {r.dx:+.2f}) px against it, "
              f"{r.agreeing} of {r.sampled} fields agree, {describe_standard_error(r)} ({used})")
    for line in alignment.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not args.no_plot:
        plot = plot_offsets(alignment.table, out.with_suffix(".png"))
        print(f"wrote {plot}")
    seconds = sorted(alignment.seconds)
    print(f"wrote {out}: {len(alignment.table)} rows, {len(fields)} fields "
          f"({seconds[len(seconds) // 2]:.1f} s per field)")
    return 0


def _predictor(models: list[str], magnification: str | None) -> Any:
    """The bundles' predictor; refuses bundles whose predictions are not in the brightfield frame."""
    from vstain.errors import VstainError
    from vstain.inference.predictor import Predictor

    predictor = Predictor(models, device="cpu")
    for bundle in predictor.bundles:
        if bundle.metadata.alignment is None:
            raise VstainError(f"--model {bundle.path or bundle.name}: trained without alignment "
                              "(data.alignment: none), so it predicts in no particular frame; give a model "
                              "trained with data.alignment: auto or FILE")
    if len(predictor.magnifications) != 1:
        raise VstainError(f"--model: bundles for several magnifications ({', '.join(predictor.magnifications)}); "
                          "align one magnification at a time")
    if magnification is not None and magnification != predictor.magnifications[0]:
        raise VstainError(f"--model: the bundles are for {predictor.magnifications[0]} fields, "
                          f"not --magnification {magnification}")
    return predictor
