"""``vstain synth``: write a realistic synthetic plate (CV7000 layout, masks, plate.json)."""

from __future__ import annotations

import argparse

from vstain.vocabulary import MAGNIFICATIONS

EXAMPLE = """example:
  vstain synth --out plates/synthetic --magnification 20x --wells 2 --fields 3 --seed 0
  vstain synth --out /tmp/tiny --magnification 20x 40x --size 256x256 --preview
  vstain synth --list-presets
  vstain synth --out plates/faint --preset faint-nuclei --magnification 20x 40x 60x
  vstain synth --out plates/variant7 --randomize 7 --max-shift 4
  vstain synth --gallery docs/figures/synth-presets.png --size 384x384
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
PARAMETER_FLAGS = {"root": "--out", "max_shift_px": "--max-shift"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a realistic synthetic plate",
        description="Render synthetic adipocyte fields (7 brightfield planes, nuclei/lipids/cytoplasm "
        "stains, nucleus masks) and write them as a CV7000 plate folder with plate.json. Named presets "
        "and seeded random variants change the culture, optics, stains, camera and misregistration "
        "(docs/synthetic-data.md).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", help="plate folder to write (required unless --list-presets or --gallery)")
    parser.add_argument("--magnification", nargs="+", default=["20x"], choices=MAGNIFICATIONS,
                        help="one or more of 20x 40x 60x (default 20x)")
    parser.add_argument("--wells", type=int, default=2, help="number of wells: B02, B03, ... (default 2)")
    parser.add_argument("--fields", type=int, default=3, help="fields per well: F001, ... (default 3)")
    parser.add_argument("--seed", type=int, default=0,
                        help="image seed (specimen and noise); same seed, same bytes (default 0)")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="field size HxW in pixels (default: full CV7000 field, 2154x2554 at 20x)")
    parser.add_argument("--plate-id", default=None, help="plate id in file names (default AssayPlate_Greiner_#655090)")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--preset", default=None, metavar="NAME",
                         help="a named plate variant (default reference); see --list-presets")
    variant.add_argument("--randomize", type=int, default=None, metavar="SEED",
                         help="draw every varied parameter from its documented range with this variant seed "
                         "(separate from --seed)")
    parser.add_argument("--max-shift", type=float, default=None, metavar="PX",
                        help="shift the stains against brightfield by up to PX pixels per axis, smoothly per "
                        "site and a little per stain (default: the preset's; none for reference; 0 aligns)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    parser.add_argument("--gallery", default=None, metavar="PNG",
                        help="render the first field under every preset (or --preset/--randomize's variant "
                        "next to reference) side by side into PNG and exit")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview_<mag>.png (brightfield Z01/Z04/Z07 and the stains of the first field)")
    parser.add_argument("--overwrite", action="store_true", help="replace a plate already in --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from vstain.errors import ConfigError
    from vstain.synth import DEFAULT_PLATE_ID, PRESETS, generate_plate
    from vstain.synth.field import render_field
    from vstain.synth.plate import field_seed, plate_parameters, well_names

    if args.list_presets:
        width = max(map(len, PRESETS))
        for name, preset in PRESETS.items():
            print(f"{name:<{width}}  {preset.description}")
        return 0
    if args.gallery:
        from vstain.synth.preview import save_gallery

        mag = args.magnification[0]
        if args.preset is None and args.randomize is None:
            variants = {name: dict(preset=name) for name in PRESETS}
        else:
            label = args.preset if args.preset is not None else f"randomize {args.randomize}"
            variants = {"reference": dict(preset="reference"),
                        label: dict(preset=args.preset, randomize=args.randomize)}
        fields = {}
        for label, chosen in variants.items():
            params = plate_parameters(mag, max_shift_px=args.max_shift, seed=args.seed, **chosen)
            fields[label] = render_field(magnification=mag, seed=field_seed(args.seed, mag, well_names(1)[0], 1),
                                         size=args.size or (384, 384), params=params)
        print(f"gallery: {save_gallery(fields, args.gallery)}")
        return 0
    if not args.out:
        raise ConfigError("`root` is required to write a plate (or use --list-presets / --gallery)")

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
        preset=args.preset,
        randomize=args.randomize,
        max_shift_px=args.max_shift,
    )
    if args.preview:
        from vstain.synth.preview import save_preview

        first_well = well_names(1)[0]
        for mag in args.magnification:
            # Re-rendering the first field is cheaper than keeping every field in memory.
            params = plate_parameters(mag, preset=args.preset, randomize=args.randomize,
                                      max_shift_px=args.max_shift, seed=args.seed)
            field = render_field(magnification=mag, seed=field_seed(args.seed, mag, first_well, 1), size=args.size,
                                 params=params)
            print(f"preview: {save_preview(field, Path(args.out) / f'preview_{mag}.png')}")
    total = len(args.magnification) * args.wells * args.fields
    print(f"wrote {total} fields to {args.out} ({manifest.name}) in {time.perf_counter() - started:.1f} s")
    return 0
