"""``vstain convert PLATE OUT.ome.zarr``: a CV7000 plate to an OME-Zarr HCS plate, and back (``--to cv7000``)."""

from __future__ import annotations

import argparse

from vstain.commands.cluster_args import add_cluster_arguments, cluster_options
from vstain.vocabulary import MAGNIFICATIONS

EXAMPLE = """\
examples:
  vstain convert data/plate data/plate.ome.zarr                    # CV7000 TIFFs -> OME-Zarr HCS
  vstain convert data/plate.ome.zarr restored/ --to cv7000         # and back, same file names
  vstain convert data/plate data/plate.ome.zarr --workers 2        # fields in 2 local processes
  vstain convert /shared/plate /shared/plate.ome.zarr --scheduler tcp://head:8786

Lossless: pixels are copied bit for bit (uint16, Blosc-zstd), and the plate id, wells, fields,
time points, magnifications, file names, nucleus masks and prediction provenance are kept. The
zarr plate holds one image per field with channels C01 C02 C03 C04Z01..C04Z07 (one chunk per
plane), pixel sizes per magnification, one acquisition per magnification; see
docs/data-format.md. Fields done are skipped, so an interrupted conversion resumes. The source
is never written to.
"""

#: Library parameters whose flag has another name (see vstain.cli.command_flags).
PARAMETER_FLAGS = {"source": "PLATE", "output": "OUT"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a plate between CV7000 TIFFs and an OME-Zarr HCS plate",
        description="Convert a CV7000 TIFF plate into an OME-Zarr HCS plate (NGFF 0.5), or back.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("plate", help="the plate to read: a CV7000 folder or an OME-Zarr plate")
    parser.add_argument("out", help="the plate to write: OUT.ome.zarr, or a folder with --to cv7000")
    parser.add_argument("--to", choices=("ome-zarr", "cv7000"),
                        help="output format (default: the other one than PLATE's)")
    parser.add_argument("--magnification", choices=MAGNIFICATIONS,
                        help="only this magnification (required for a flat TIFF folder)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="convert the valid fields of a plate that has errors (default: refuse; see vstain check)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    from vstain.plate.convert import convert_plate

    started = time.perf_counter()
    report = convert_plate(args.plate, args.out, to=args.to, magnification=args.magnification,
                           skip_invalid=args.skip_invalid, cluster=cluster_options(args),
                           progress=not args.no_progress, announce=lambda line: print(line, flush=True))
    elapsed = time.perf_counter() - started
    rate = report.bytes_read / 1e6 / elapsed if report.converted else 0.0
    print(f"{report.output}: {report.converted} fields converted, {report.skipped} already done "
          f"({report.fields} in the plate; {elapsed:.1f} s, {rate:.1f} MB/s)")
    return 0
