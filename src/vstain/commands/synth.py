"""``vstain synth``: write a realistic synthetic plate (CV7000 layout, masks, plate.json)."""

from __future__ import annotations

import argparse

from vstain.vocabulary import MAGNIFICATIONS

EXAMPLE = """example:
  vstain synth --out plates/synthetic --magnification 20x --wells 2 --fields 3 --seed 0
  vstain synth --out /tmp/tiny --magnification 20x 40x --size 256x256 --preview
"""


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (or ``"N"`` for a square) as ``(H, W)``."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 512x640 (rows x cols, at least 8 each)")
    return values  # type: ignore[return-value]


#: Library parameters whose flag has another name (see vstain.cli.command_flags).
PARAMETER_FLAGS = {"root": "--out"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a realistic synthetic plate",
        description="Render synthetic adipocyte fields (7 brightfield planes, nuclei/lipids/cytoplasm "
        "stains, nucleus masks) and write them as a CV7000 plate folder with plate.json.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="plate folder to write")
    parser.add_argument("--magnification", nargs="+", default=["20x"], choices=MAGNIFICATIONS,
                        help="one or more of 20x 40x 60x (default 20x)")
    parser.add_argument("--wells", type=int, default=2, help="number of wells: B02, B03, ... (default 2)")
    parser.add_argument("--fields", type=int, default=3, help="fields per well: F001, ... (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="field size HxW in pixels (default: full CV7000 field, 2154x2554 at 20x)")
    parser.add_argument("--plate-id", default=None, help="plate id in file names (default AssayPlate_Greiner_#655090)")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview_<mag>.png (brightfield Z01/Z04/Z07 and the stains of the first field)")
    parser.add_argument("--overwrite", action="store_true", help="replace a plate already in --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from vstain.synth import DEFAULT_PLATE_ID, generate_plate
    from vstain.synth.field import render_field
    from vstain.synth.plate import field_seed, well_names

    started = time.perf_counter()
    manifest = generate_plate(
        args.out,
        magnification=args.magnification,
        wells=args.wells,
        fields=args.fields,
        seed=args.seed,
        size=args.size,
        plate_id=args.plate_id or DEFAULT_PLATE_ID,
        overwrite=args.overwrite,
        progress=print,
    )
    if args.preview:
        from vstain.synth.preview import save_preview

        first_well = well_names(1)[0]
        for mag in args.magnification:
            # Re-rendering the first field is cheaper than keeping every field in memory.
            field = render_field(magnification=mag, seed=field_seed(args.seed, mag, first_well, 1), size=args.size)
            print(f"preview: {save_preview(field, Path(args.out) / f'preview_{mag}.png')}")
    total = len(args.magnification) * args.wells * args.fields
    print(f"wrote {total} fields to {args.out} ({manifest.name}) in {time.perf_counter() - started:.1f} s")
    return 0
