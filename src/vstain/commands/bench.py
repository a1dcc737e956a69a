"""``vstain bench``: inference, training and evaluation speed (wrapper over :mod:`vstain.bench.run`)."""

from __future__ import annotations

import argparse

from vstain.vocabulary import ALIGNMENT_MODES, TARGETS

EXAMPLE = """\
example:
  vstain bench --quick                          # all sections, CPU-sized: one 1024² field, 128² crops
  vstain bench training --quick                 # only the recipes' real training steps
  vstain bench inference --quick --field 256x256   # a smoke run in seconds
  vstain bench --device cuda --out bench.json   # full 2154x2554 fields, batch 4/6 at 512²
  PYTHONPATH=src python -m vstain bench inference --device cuda

Sections (default: all):
  inference   all three stains of one field (random-weight reference networks) in reference mode
              (512/256 pyramid tiles, fp32) and the fast modes/settings the device supports
  training    the recipe modules vstain train runs (GanModule, LupiModule, RegressionModule)
              through their training_step, built from configs/train/ (GAN batch 4, nuclei LUPI
              batch 6, pretraining batch 4 at 512²): the shipped config (fp32 eager) vs bf16 +
              channels_last (+ compile on CUDA), with and without memory-efficient dense layers
  evaluation  the CellProfiler-equivalent measurements of one synthetic 20x field (1 thread and
              the default)
Prints a table per section; --out also writes the numbers as JSON.

  vstain bench quality --out bench-quality      # hours: the CPU recipe on 8 plate variants
  vstain bench quality --variants reference-20x random-40x --out bq
  vstain bench quality --full-size --variants random-20x --out bq-full   # the 30-minute recipe, full fields
  vstain bench quality --variants random-2321-20x rim-droplets-40x --stains cytoplasm --as-shipped --out bq-c
                                                # fresh plates, one stain beside the true others
  vstain bench quality --variants random-6701-60x --stains cytoplasm --as-shipped \
      --set cytoplasm:model.args.downsample=4 --set cytoplasm:data.crop_size=512 --out bq-c-ds4
                                                # the same with a recipe change, to compare
  quality     not part of `all`: for each plate variant (vstain synth presets and random draws,
              held-back ones included) train the CPU recipe, predict held-out wells and score it
              against the mean-image and linear baselines; --out is then a folder (quality.md,
              .csv, .json, .png); a rerun skips variants already done (docs/quality.md);
              besides the named variants, random-<seed>-<mag> and <preset>-<mag> are fresh plates

  vstain bench uncertainty --out bench-uncertainty   # ~30 min on 2 cores
  uncertainty not part of `all`: train the CPU recipe on a 100-field synthetic plate, calibrate
              on 42 fields (alpha 0.1 and 0.2), predict 42 test fields with intervals and measure
              coverage, adaptivity and time (uncertainty.md, .json; docs/uncertainty.md)

  vstain bench alignment --out bench-alignment       # ~40 min on 2 cores
  alignment   not part of `all`: train the CPU recipe with data.alignment none and auto on a
              misaligned and an aligned synthetic plate, score held-out fields in the stains'
              frame, and measure vstain align's error on the misaligned plate (training.md,
              .json, errors.csv; docs/alignment.md)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from vstain.bench.run import SECTIONS

    parser = subparsers.add_parser(
        "bench",
        help="benchmark inference, training and evaluation speed",
        description="Benchmark inference seconds per field, training images/s of the real recipe steps and "
                    "the evaluation's measurements, reference vs fast settings.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The default is a string: argparse checks a list default of nargs="*" against the choices as a whole.
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        choices=[*SECTIONS, "all", "quality", "uncertainty", "alignment"],
                        default="all",
                        help=f"what to time: {', '.join(SECTIONS)} or all (default all); or quality, "
                             "uncertainty or alignment, alone")
    parser.add_argument("--quick", action="store_true", help="small sizes that run in minutes on a CPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-training", action="store_true", help="leave out the training section")
    parser.add_argument("--no-evaluation", action="store_true", help="leave out the evaluation section")
    parser.add_argument("--field", metavar="HxW",
                        help="field size for inference and evaluation "
                             "(default: 1024x1024 with --quick, 2154x2554 without); uncertainty: the plate's "
                             "fields (default 256x256)")
    parser.add_argument("--compile", action="store_true",
                        help="on a CPU, also time torch.compile (minutes of warm-up; always timed on CUDA)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="quality: plate variants to run (default all; see docs/quality.md)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true",
                      help="quality, uncertainty, alignment: tiny plates and a few steps (tests the machinery; "
                           "the numbers mean nothing)")
    size.add_argument("--full-size", action="store_true",
                      help="quality: fields of the instrument's size and the CPU recipe as shipped (~1 h a variant "
                           "on 2 cores)")
    size.add_argument("--as-shipped", action="store_true",
                      help="quality: the default 1024² plates, but every stain trained for its recipe's own epochs "
                           "(the default trains lipids and cytoplasm 3 of their 10)")
    parser.add_argument("--stains", nargs="+", metavar="STAIN", choices=TARGETS,
                        help=f"quality: train only these ({', '.join(TARGETS)}); the others are scored as their true "
                             "test files, so the score measures these stains alone (default all three)")
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="STAIN:KEY=VALUE",
                        help="quality: try a recipe change, a config override of one stain's step (repeatable), "
                             "e.g. cytoplasm:data.crop_size=512; recorded with the trial, so a folder trained "
                             "without it is refused")
    parser.add_argument("--seed", type=int, default=0, help="quality: seed of plates, splits and training (default 0)")
    parser.add_argument("--alignment", choices=ALIGNMENT_MODES,
                        help="quality: data.alignment of every training run (default none, the recipe as shipped; "
                             "auto scores the models in the stains' frame)")
    parser.add_argument("--max-shift", type=float, metavar="PX",
                        help="alignment: per-axis cap of the misaligned plate's shifts (default 8: shifts of about "
                             "3.5-7 px)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is steadier on a busy machine)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vstain.bench.run import SECTIONS, format_table, run_benchmark, save_result
    from vstain.errors import VstainError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise VstainError("--device cuda asked for but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    field = _field_size(args.field)
    named = [args.sections] if isinstance(args.sections, str) else list(args.sections)
    if args.max_shift is not None and named != ["alignment"]:
        raise VstainError("--max-shift is for `vstain bench alignment` alone (the misaligned plate's shifts)")
    if args.max_shift is not None:
        from vstain.synth.parameters import MAX_SHIFT_PX

        if not 0 < args.max_shift <= MAX_SHIFT_PX:
            raise VstainError(f"--max-shift {args.max_shift:g}: expected a cap above 0 and at most {MAX_SHIFT_PX:g} px")
    if args.alignment is not None and named != ["quality"]:
        raise VstainError("--alignment is for `vstain bench quality` alone (the alignment benchmark runs both)")
    if (args.stains or args.as_shipped or args.changes) and named != ["quality"]:
        raise VstainError("--stains, --as-shipped and --set are for `vstain bench quality` alone")
    if "quality" in named:
        return _quality(args, named)
    if "uncertainty" in named:
        return _uncertainty(args, named, field)
    if "alignment" in named:
        return _alignment(args, named)
    sections = set(SECTIONS) if not named or "all" in named else set(named)
    if args.no_training:
        sections.discard("training")
    if args.no_evaluation:
        sections.discard("evaluation")
    if not sections:
        raise VstainError("nothing to benchmark: every section was left out")
    result = run_benchmark(tuple(sections), quick=args.quick, device=args.device, field=field,
                           cpu_compile=args.compile)
    print()
    print(format_table(result))
    if args.out:
        save_result(result, args.out)
        print(f"\nwrote {args.out}")
    return 0


def _quality(args: argparse.Namespace, named: list[str]) -> int:
    from vstain.bench.quality import parse_changes, run_quality_benchmark
    from vstain.errors import VstainError

    if len(named) > 1:
        raise VstainError("the quality benchmark runs alone (hours, not minutes): `vstain bench quality --out DIR`")
    out = args.out or "bench-quality"
    budget = "smoke" if args.smoke else "full" if args.full_size else "shipped" if args.as_shipped else "bench"
    summary = run_quality_benchmark(out, variants=args.variants, budget=budget, seed=args.seed,
                                    log=lambda line: print(line, flush=True), alignment=args.alignment or "none",
                                    stains=args.stains, changes=parse_changes(args.changes))
    from vstain.bench.quality import quality_markdown

    print()
    print(quality_markdown(summary))
    print(f"wrote {out}/quality.md, quality.csv, quality.json, quality.png")
    return 0


def _uncertainty(args: argparse.Namespace, named: list[str], field: tuple[int, int] | None) -> int:
    from vstain.bench.uncertainty import run_uncertainty_benchmark, uncertainty_markdown

    _check_alone(args, named, "uncertainty")
    out = args.out or "bench-uncertainty"
    summary = run_uncertainty_benchmark(out, seed=args.seed, smoke=args.smoke, size=field or (256, 256),
                                        log=lambda line: print(line, flush=True))
    print()
    print(uncertainty_markdown(summary))
    print(f"wrote {out}/uncertainty.md, uncertainty.json")
    return 0


def _alignment(args: argparse.Namespace, named: list[str]) -> int:
    from pathlib import Path

    from vstain.bench.alignment import alignment_errors, error_summary, run_alignment_training

    _check_alone(args, named, "alignment")
    out = Path(args.out or "bench-alignment")
    shift = {} if args.max_shift is None else {"max_shift_px": args.max_shift}
    summary = run_alignment_training(out, seed=args.seed, smoke=args.smoke, log=lambda line: print(line, flush=True),
                                     **shift)
    errors, _ = alignment_errors(out / "misaligned" / "plate")
    errors.to_csv(out / "errors.csv", index=False)
    print()
    print((out / "training.md").read_text())
    print(error_summary(errors).to_string(index=False))
    checks = summary["checks"]
    print(f"wrote {out}/training.md, training.json, errors.csv; targets: "
          + ", ".join(f"{k} {v}" for k, v in checks.items() if k.endswith("_met")))
    return 0


def _check_alone(args: argparse.Namespace, named: list[str], name: str) -> None:
    """The uncertainty and alignment benchmarks train on their own plates: no other section or quality flag."""
    from vstain.errors import VstainError

    if len(named) > 1 or args.full_size or args.variants:
        raise VstainError(f"the {name} benchmark runs alone, on its own plates: "
                          f"`vstain bench {name} --out DIR [--smoke]`")


def _field_size(text: str | None) -> tuple[int, int] | None:
    """``--field HxW`` as ``(H, W)``; None when not given; one-line errors otherwise."""
    from vstain.errors import VstainError

    if not text:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise VstainError(f"--field {text!r}: expected HxW, e.g. 1024x1024") from None
    if height < 16 or width < 16:
        raise VstainError(f"--field {text}: each side must be at least 16 pixels")
    return height, width
