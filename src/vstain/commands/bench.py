"""``vstain bench``: inference and training speed, reference settings vs fast ones."""

from __future__ import annotations

import argparse

EXAMPLE = """\
example:
  vstain bench --quick                          # CPU-sized: one 1024² field, 128² training crops
  vstain bench --quick --field 256x256 --no-training   # a smoke run in seconds
  vstain bench --device cuda --out bench.json   # full 2154x2554 fields, batch 4/6 at 512²
  PYTHONPATH=src python -m vstain bench --device cuda --no-training

Times all three stains per field (random-weight reference networks) in reference mode (512/256
pyramid tiles, fp32) and in the fast modes/settings the device supports, the training steps
(GAN G+D batch 4, nuclei LUPI batch 6) in fp32 eager vs bf16 + channels_last (+ compile on CUDA),
and the evaluation's measurements of one synthetic 20x field (1 thread and the default).
Prints a table; --out also writes the numbers as JSON.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark inference and training speed",
        description="Benchmark inference seconds per field and training images/s, reference vs fast settings.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes that run in minutes on a CPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-training", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--no-evaluation", action="store_true",
                        help="skip timing the CellProfiler-equivalent measurements of one field")
    parser.add_argument("--field", metavar="HxW", help="inference field size (default: 1024x1024 with --quick, 2154x2554 without)")
    parser.add_argument("--compile", action="store_true",
                        help="on a CPU, also time torch.compile (minutes of warm-up; always timed on CUDA)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is steadier on a busy machine)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vstain.errors import VstainError
    from vstain.inference.benchmark import format_table, run_benchmark, save_result

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise VstainError("--device cuda asked for but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    field = None
    if args.field:
        try:
            height, width = (int(v) for v in args.field.lower().split("x"))
        except ValueError:
            raise VstainError(f"--field {args.field!r}: expected HxW, e.g. 1024x1024") from None
        if height < 16 or width < 16:
            raise VstainError(f"--field {args.field}: each side must be at least 16 pixels")
        field = (height, width)
    result = run_benchmark(quick=args.quick, device=args.device, training=not args.no_training,
                           field=field, cpu_compile=args.compile, evaluation=not args.no_evaluation)
    print()
    print(format_table(result))
    if args.out:
        save_result(result, args.out)
        print(f"\nwrote {args.out}")
    return 0
