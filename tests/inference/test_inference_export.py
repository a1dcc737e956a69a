"""ONNX export of generator bundles, checked with onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tiny_bundles import TINY_TIRAMISU, bundle_metadata
from vstain.errors import VstainError
from vstain.inference.bundle import save_bundle
from vstain.inference.export import export_onnx

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def test_tiramisu_export_matches_pytorch_with_dynamic_sizes(tmp_path, tiny_tiramisu):
    bundle = save_bundle(tmp_path / "lipids", tiny_tiramisu, bundle_metadata())
    report = export_onnx(bundle, tmp_path / "lipids.onnx")
    assert report["max_abs_diff"] is not None and report["max_abs_diff"] < 1e-4 and report["opset"] >= 17
    model = onnx.load(str(tmp_path / "lipids.onnx"))
    assert model.opset_import[0].version >= 17
    meta = json.loads({p.key: p.value for p in model.metadata_props}["vstain"])
    assert meta["targets"] == ["lipids"]
    session = onnxruntime.InferenceSession(str(tmp_path / "lipids.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 7, 16 * 3, 16 * 6), dtype=np.float32)  # a size not used at export
    got = session.run(None, {"brightfield": x})[0]
    with torch.inference_mode():
        want = tiny_tiramisu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_tiramisu_downsample_bundle_reloads_and_exports(tmp_path):
    # The 60x lipid recipe's bundles work on averaged pixels: the argument must travel in the bundle
    # (a reload without it would run at full resolution) and survive ONNX export.
    from vstain.inference.bundle import load_model
    from vstain.models import build_model

    torch.manual_seed(0)
    net = build_model("tiramisu", **TINY_TIRAMISU, downsample=2).eval()
    bundle = save_bundle(tmp_path / "lipids", net, bundle_metadata("tiramisu", {**TINY_TIRAMISU, "downsample": 2}))
    loaded = load_model(bundle)
    assert loaded.model.downsample == 2
    x = torch.rand(1, 7, 40, 56)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), net(x))
    report = export_onnx(bundle, tmp_path / "lipids.onnx")
    assert report["max_abs_diff"] < 1e-4 and report["size_multiple"] == net.size_multiple == 8


@pytest.mark.parametrize("downsample", [1, 2])  # the CPU recipe's nuclei bundles work on averaged pixels
def test_lupi_export_returns_the_image_only(tmp_path, downsample):
    from vstain.models import build_model

    torch.manual_seed(0)
    lupi = build_model("lupi", **TINY_TIRAMISU, downsample=downsample).eval()
    bundle = save_bundle(tmp_path / "nuclei", lupi, bundle_metadata("lupi", {**TINY_TIRAMISU, "downsample": downsample},
                                                                      targets=("nuclei",)))
    report = export_onnx(bundle, tmp_path / "nuclei.onnx")
    assert report["max_abs_diff"] < 1e-4 and report["size_multiple"] == lupi.size_multiple == 4 * downsample
    session = onnxruntime.InferenceSession(str(tmp_path / "nuclei.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["image"]


def test_discriminators_are_not_exported(tmp_path):
    from vstain.models import build_model

    disc = build_model("patchgan", ndf=8, n_layers=2)
    bundle = save_bundle(tmp_path / "d", disc, bundle_metadata("patchgan", arguments={"ndf": 8, "n_layers": 2}))
    with pytest.raises(VstainError, match="not a generator"):
        export_onnx(bundle, tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()
