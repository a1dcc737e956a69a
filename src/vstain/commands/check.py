"""``vstain check PLATE``: index a plate folder, print what is there and every problem found."""

from __future__ import annotations

import argparse

from vstain.vocabulary import MAGNIFICATIONS

EXAMPLE = """\
example:
  vstain check data/plate                       # <plate>/{20x,40x,60x}_images layout
  vstain check data/flat_folder --magnification 40x --fields
  vstain check data/plate --deep                # also decode every image (reads the whole plate)
  vstain check data/plate.ome.zarr              # an OME-Zarr HCS plate

What is checked by default (fast: file names and TIFF headers, no pixel data): CV7000 names,
channels C01-C04, all 7 brightfield planes Z01-Z07 per field, duplicates, and from each TIFF
header that the file opens, holds one 2-D uint16 plane and has the plate's size (nucleus masks:
integer labels of their field's size). --deep also decodes the pixel data of every image, which
finds files whose header is intact but whose data is truncated or corrupt. An OME-Zarr plate is
checked the same way: wells and field images the plate lists, the channels of each field
(C01-C03, C04Z01-C04Z07), uint16 (c, y, x) arrays with one chunk per plane and the plate's size,
planes never written (no chunk), and with --deep every chunk decoded.

One line per well (counts of fields and of the stains and masks present), then every problem, one
line each, naming the file. Exit code 1 if any error was found, 0 otherwise.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a plate folder and summarise its fields",
        description="Index a CV7000 plate folder or an OME-Zarr HCS plate, print a summary per well and "
        "list every problem found.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("plate", help="plate folder (<plate>/<mag>_images/, a flat folder of TIFFs) or OME-Zarr plate")
    parser.add_argument(
        "--magnification",
        choices=MAGNIFICATIONS,
        help="magnification of a flat folder; with the <mag>_images layout, check only this one",
    )
    parser.add_argument("--fields", action="store_true", help="print one line per field instead of per well")
    parser.add_argument("--deep", action="store_true",
                        help="also decode every image's pixel data (slower: reads the whole plate)")
    parser.add_argument(
        "--max-issues",
        type=int,
        default=200,
        metavar="N",
        help="print at most N problems (0: all; default 200)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.plate.index import index_plate
    from vstain.plate.report import field_table, well_table

    index = index_plate(args.plate, magnification=args.magnification, check_pixels=args.deep)
    n_wells = len({(f.magnification, f.well) for f in index.fields})
    print(f"plate {index.root}: {len(index.fields)} valid fields in {n_wells} wells")
    table = field_table(index) if args.fields else well_table(index)
    if len(table):
        print(table.to_string(index=False))
    errors = index.errors
    warnings = len(index.issues) - len(errors)
    if index.issues:
        print(f"\n{len(errors)} errors, {warnings} warnings:")
        shown = index.issues if args.max_issues <= 0 else index.issues[: args.max_issues]
        for issue in shown:
            print(issue)
        if len(shown) < len(index.issues):
            print(f"... and {len(index.issues) - len(shown)} more (use --max-issues 0 to see all)")
    else:
        print("no problems found")
    return 1 if errors else 0
