"""Export a bundle's generator network to ONNX, checked against PyTorch with onnxruntime.

The graph takes ``brightfield`` (B, 7, H, W) normalised float32 and returns ``image``
(B, K, H, W) in (0, 1) - for LUPI the image output only. Batch, height and width are dynamic
axes, but H and W must be multiples of the network's size multiple (16 for the reference
networks): the networks pad internally otherwise, and the traced graph keeps no padding. The
bundle's metadata (targets, normalisers, ...) is copied into the ONNX ``metadata_props`` under
``vstain``, so the file stays self-describing. The graph ends at the network's output: a consumer
de-normalises it with ``normalization.targets`` and, where the metadata has an ``intensity_map``,
maps the counts through it (piecewise linear, src/vstain/inference/intensity_map.py) as
``vstain predict`` does.

The TorchScript-based exporter is used (opset 17): on the reference Tiramisu it exports in
about a second, where the ``torch.export`` (dynamo) exporter takes 20+ s for the same graph.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vstain.atomic import atomic_path
from vstain.errors import BundleError, ConfigError
from vstain.inference.bundle import ModelBundle, load_model
from vstain.inference.engine import StainNetworks

__all__ = ["export_onnx", "GENERATORS", "DEFAULT_OPSET"]

GENERATORS: tuple[str, ...] = ("tiramisu", "tiramisu_multi", "lupi")
DEFAULT_OPSET = 17


def export_onnx(
    bundle: ModelBundle | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Write the bundle's network as an ONNX file and (optionally) check it with onnxruntime.

    Parameters
    ----------
    bundle
        A loaded bundle or the path of one.
    out
        Destination ``.onnx`` file (written atomically).
    opset
        ONNX opset (>= 17).
    check
        Run onnxruntime on two random inputs of different batch and size and compare with
        PyTorch; raise if the largest difference exceeds ``atol``.

    Returns
    -------
    dict
        ``{"path", "opset", "input", "output", "size_multiple", "max_abs_diff"}`` (the diff is
        None when not checked or onnxruntime is missing).
    """
    if not isinstance(bundle, ModelBundle):
        bundle = load_model(bundle)
    name = bundle.metadata.architecture
    if name not in GENERATORS:
        raise BundleError(
            f"{bundle.name}: {name!r} is not a generator network; ONNX export supports {', '.join(GENERATORS)}"
        )
    if opset < 17:
        raise ConfigError(f"`opset` {opset} is too old; use 17 or newer")
    network = StainNetworks([bundle.model], output_indices=[bundle.metadata.output_index]).cpu().eval()
    multiple = int(getattr(bundle.model, "size_multiple", 16))
    seeded = torch.Generator().manual_seed(0)
    sample = torch.rand(1, bundle.metadata.input_planes, 4 * multiple, 5 * multiple, generator=seeded)
    target = Path(out)
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (sample,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=["brightfield"],
            output_names=["image"],
            dynamic_axes={"brightfield": {0: "batch", 2: "height", 3: "width"},
                          "image": {0: "batch", 2: "height", 3: "width"}},
        )
        _embed_metadata(tmp, bundle)
    report: dict[str, Any] = {
        "path": str(target),
        "opset": opset,
        "input": "brightfield (B, 7, H, W) float32, normalised; H, W multiples of size_multiple",
        "output": f"image (B, {len(bundle.targets)}, H, W) in (0, 1): {', '.join(bundle.targets)}",
        "size_multiple": multiple,
        "max_abs_diff": None,
    }
    if check:
        report["max_abs_diff"] = check_onnx(target, network, planes=bundle.metadata.input_planes,
                                            multiple=multiple, atol=atol)
    return report


def _embed_metadata(path: Path, bundle: ModelBundle) -> None:
    try:
        import onnx
    except ModuleNotFoundError:  # metadata is a nicety; the graph is what matters
        return
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key = "vstain"
    entry.value = json.dumps(bundle.metadata.to_dict(), sort_keys=True)
    onnx.save(model, str(path))


def check_onnx(path: str | os.PathLike[str], network: torch.nn.Module, *, planes: int = 7,
               multiple: int = 16, atol: float = 1e-4) -> float | None:
    """Largest |onnxruntime - PyTorch| over two random inputs; raises above ``atol``.

    Returns None if onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, height, width in ((1, 4 * multiple, 5 * multiple), (2, 3 * multiple, 2 * multiple)):
        x = rng.random((batch, planes, height, width), dtype=np.float32)
        got = session.run(None, {"brightfield": x})[0]
        with torch.inference_mode():
            want = network(torch.from_numpy(x)).numpy()
        if got.shape != want.shape:
            raise BundleError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > atol:
        raise BundleError(f"{path}: ONNX output differs from PyTorch by {worst:.2e} (> {atol:.0e})")
    return worst
