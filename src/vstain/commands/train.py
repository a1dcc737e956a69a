"""``vstain train``: train one model from a config (also ``python -m vstain -c CONFIG``)."""

from __future__ import annotations

import argparse

EXAMPLE = """\
examples:
  vstain train -c configs/smoke/lipids_pretrain.yaml --set data.root=plate
  vstain train -c configs/train/C2_20x_gan.yaml --set gan.pretrained=runs/C2_20x_pretrain/model.safetensors
  vstain train -c configs/train/C1_20x.yaml --resume            # continue runs/C1_20x from last.ckpt
  python -m vstain -c configs/train/C3_40x_pretrain.yaml --set trainer.precision=bf16-mixed
multi-GPU: torchrun --nproc-per-node 4 -m vstain train -c CONFIG --set trainer.strategy=ddp
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML/JSON config",
        description="Train one model (recipe regression | gan | lupi) from a validated config. "
        "Writes RUN_DIR/model.safetensors (the bundle vstain predict uses), "
        "RUN_DIR/config.resolved.yaml, checkpoints and logs.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", required=True, help="training config (YAML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. trainer.max_epochs=3 (repeatable)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                        help="continue from a checkpoint (default: the run folder's last.ckpt)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from vstain.config import load_config
    from vstain.training.fit import fit

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / config.name
    bundle = fit(config, out, resume=args.resume)
    print(f"model bundle: {bundle}")
    print(f"run folder:   {out} (config.resolved.yaml, checkpoints/, logs/)")
    return 0
