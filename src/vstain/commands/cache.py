"""``vstain cache PLATE``: memory-mapped copies of a plate's fields for fast random crops."""

from __future__ import annotations

import argparse

from vstain.vocabulary import MAGNIFICATIONS

EXAMPLE = """\
example:
  vstain cache data/plate                  # writes data/plate.vstain-cache/
  vstain cache data/plate --out /scratch/plate-cache --magnification 20x

Each field becomes brightfield.npy (7, H, W) uint16 plus nuclei/lipids/cytoplasm/mask .npy when
present, read back with numpy memory maps (vstain.plate.cache.open_cached_field). Fields already
cached and unchanged are skipped, so an interrupted run resumes. The plate is never written to.
"""


#: Library parameters whose flag has another name (see vstain.cli.command_flags).
PARAMETER_FLAGS = {"folder": "--out"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="convert a plate to memory-mapped arrays for fast training crops",
        description="Convert every field of a plate to memory-mappable .npy files in a cache folder.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("plate", help="plate folder (<plate>/<mag>_images/, a flat folder of TIFFs) or OME-Zarr plate")
    parser.add_argument("--out", metavar="DIR", help="cache folder (default: <plate>.vstain-cache beside the plate)")
    parser.add_argument(
        "--magnification",
        choices=MAGNIFICATIONS,
        help="only this magnification (required for a flat folder)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="cache the valid fields of a plate that has errors (default: refuse; see `vstain check`)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.plate.cache import cache_plate, default_cache_folder
    from vstain.plate.index import index_plate

    index = index_plate(args.plate, magnification=args.magnification)
    if index.errors and not args.skip_invalid:
        index.raise_for_errors()
    folder = args.out or default_cache_folder(index.root)
    report = cache_plate(index.fields, folder, plate=index.root)
    print(f"{folder}: {len(report.written)} fields cached, {len(report.skipped)} already up to date")
    return 0
