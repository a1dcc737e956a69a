"""``vstain export``: convert a model bundle to ONNX (checked against PyTorch)."""

from __future__ import annotations

import argparse

EXAMPLE = """\
example:
  vstain export --onnx models/C2_20x.safetensors --out C2_20x.onnx

The ONNX graph maps `brightfield` (B, 7, H, W), normalised, H and W multiples of 16, to `image`
(B, K, H, W) in (0, 1); batch, height and width are dynamic. The bundle's metadata (targets,
normalisers) is embedded as metadata_props["vstain"]. Unless --no-check, onnxruntime must agree
with PyTorch within --atol on two random inputs.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a generator bundle to ONNX",
        description="Export the generator network of a model bundle to ONNX and check it with onnxruntime.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--onnx", required=True, metavar="BUNDLE", help="model bundle (.safetensors) to export")
    parser.add_argument("--out", required=True, metavar="FILE", help="destination .onnx file")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed |ONNX - PyTorch| (default 1e-4)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vstain.inference.export import export_onnx

    report = export_onnx(args.onnx, args.out, opset=args.opset, check=not args.no_check, atol=args.atol)
    diff = report["max_abs_diff"]
    check = "not checked" if diff is None else f"max |ONNX - PyTorch| = {diff:.1e}"
    print(f"wrote {report['path']} (opset {report['opset']}; {report['output']}; {check})")
    return 0
