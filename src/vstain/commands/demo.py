"""``vstain demo``: the whole job on a small synthetic plate, with baselines and a report."""

from __future__ import annotations

import argparse

EXAMPLE = """\
examples:
  vstain demo --out demo-out            # about 15 minutes on a 2-core CPU
  vstain demo --out demo-quick --quick  # the same pipeline at small size, about 3 minutes

Synthesises a 20x plate, trains the three stains with the CPU recipe (configs/cpu: nuclei with
LUPI, lipids and cytoplasm by regression on the challenge's pixel metric), predicts the held-out
test fields, scores the models and two
baselines (training-mean image; per-pixel linear regression on the brightfield planes) with the
challenge metric, and writes DIR/report.html and DIR/demo-summary.json.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="synthesise, train, predict and evaluate end to end on a small plate",
        description="Run the whole pipeline on a small synthetic plate and compare the trained models "
        "with two baselines on held-out fields.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--quick", action="store_true", help="small plate and short training (about 3 minutes)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the plate, split, training and baselines (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous demo in --out")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes measuring fields during evaluation (default 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.demo import format_summary, run_demo
    from vstain.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    summary = run_demo(args.out, profile="quick" if args.quick else "full", seed=args.seed,
                       overwrite=args.overwrite, log=lambda line: print(line, flush=True), workers=args.workers)
    print()
    print(format_summary(summary))
    return 0
