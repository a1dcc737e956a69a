"""Model bundles: safetensors round trip, no pickle, clear refusals."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from tiny_bundles import TINY_TIRAMISU, bundle_metadata
from vstain.inference.bundle import BundleError, BundleMetadata, find_bundles, load_model, read_metadata, save_bundle


def _header(path):
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def test_round_trip_keeps_weights_metadata_and_outputs(tmp_path, tiny_tiramisu):
    path = save_bundle(tmp_path / "lipids_20x", tiny_tiramisu, bundle_metadata())
    assert path.name == "lipids_20x.safetensors"
    bundle = load_model(path)
    assert not bundle.model.training
    original = tiny_tiramisu.state_dict()
    loaded = bundle.model.state_dict()
    assert original.keys() == loaded.keys()
    for key in original:
        torch.testing.assert_close(loaded[key], original[key], rtol=0, atol=0)
    meta = bundle.metadata
    assert meta.architecture == "tiramisu" and meta.arguments == TINY_TIRAMISU
    assert meta.targets == ("lipids",) and meta.channels == ("C02",) and meta.magnification == "20x"
    assert meta.training == {"recipe": "test"} and meta.validation == {"mae": 0.1}
    assert meta.vstain_version and meta.created.endswith("+00:00")
    assert bundle.target_normalizer("lipids").to_dict()["low"] == [100.0]
    assert read_metadata(path) == meta
    x = torch.rand(1, 7, 32, 48)
    with torch.inference_mode():
        torch.testing.assert_close(bundle.model(x), tiny_tiramisu(x))


def test_the_file_is_plain_tensors_and_json(tmp_path, tiny_tiramisu):
    path = save_bundle(tmp_path / "m", tiny_tiramisu, bundle_metadata())
    header, data = _header(path)
    stored = json.loads(header["__metadata__"]["vstain"])
    assert stored["format"] == "vstain-bundle" and stored["targets"] == ["lipids"]
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    # every byte after the header belongs to a declared tensor: there is nowhere to hide a pickle
    assert sum(end - start for start, end in (t["data_offsets"] for t in tensors.values())) == len(data)
    assert b"torch._utils" not in path.read_bytes() and b"\x80\x04\x95" not in path.read_bytes()


def test_wrapper_prefixes_are_removed(tmp_path, tiny_tiramisu):
    wrapped = torch.nn.DataParallel(tiny_tiramisu)  # the reference's checkpoints had "module." keys
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    bundle = load_model(save_bundle(tmp_path / "m", wrapped, bundle_metadata()))
    assert bundle.model.state_dict().keys() == tiny_tiramisu.state_dict().keys()


def test_lupi_bundle_round_trip(tmp_path):
    from vstain.models import build_model

    torch.manual_seed(1)
    lupi = build_model("lupi", **TINY_TIRAMISU).eval()
    path = save_bundle(tmp_path / "nuclei", lupi, bundle_metadata("lupi", targets=("nuclei",)))
    bundle = load_model(path)
    assert bundle.metadata.channels == ("C01",)
    x = torch.rand(1, 7, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(bundle.model(x)[1], lupi(x)[1])


def test_wrong_magnification_and_plane_count_are_refused(tmp_path, tiny_tiramisu):
    path = save_bundle(tmp_path / "m", tiny_tiramisu, bundle_metadata())
    with pytest.raises(BundleError, match="trained for 20x but the plate is 40x"):
        load_model(path, magnification="40x")
    from vstain.models import build_model

    five = build_model("tiramisu", in_channels=5, **TINY_TIRAMISU)
    meta = bundle_metadata(arguments={**TINY_TIRAMISU, "in_channels": 5})
    meta["input_planes"] = 5
    five_path = save_bundle(tmp_path / "five", five, meta)
    with pytest.raises(BundleError, match="expects 5 brightfield planes but the data has 7"):
        load_model(five_path, planes=7)


@pytest.mark.parametrize(
    ("drop", "message"),
    [("normalization", "missing key 'normalization.input'"), ("targets", "missing key 'targets'"),
     ("architecture", "missing key 'architecture'")],
)
def test_missing_keys_are_named(tmp_path, tiny_tiramisu, drop, message):
    meta = BundleMetadata.from_dict(bundle_metadata()).to_dict()
    del meta[drop]
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_tiramisu.state_dict().items()}, str(path),
              metadata={"vstain": json.dumps(meta)})
    with pytest.raises(BundleError, match=message):
        load_model(path)
    with pytest.raises(BundleError, match=message):
        save_bundle(tmp_path / "again", tiny_tiramisu, meta)


def test_foreign_files_are_refused(tmp_path, tiny_tiramisu):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(BundleError, match="not a vstain model bundle"):
        load_model(plain)
    pickled = tmp_path / "C2_20x.pth"
    torch.save({"model_state_dict": tiny_tiramisu.state_dict()}, pickled)
    with pytest.raises(BundleError, match="not a safetensors model bundle.*never unpickles"):
        load_model(pickled)
    with pytest.raises(BundleError, match="no such model bundle"):
        load_model(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path, tiny_tiramisu):
    meta = bundle_metadata(arguments={**TINY_TIRAMISU, "growth_rate": 6})
    path = save_bundle(tmp_path / "m", tiny_tiramisu, meta)
    with pytest.raises(BundleError, match="weights do not match architecture 'tiramisu'"):
        load_model(path)


def test_unknown_magnification_or_target_in_metadata(tmp_path, tiny_tiramisu):
    with pytest.raises(BundleError, match="'magnification' is '10x'"):
        save_bundle(tmp_path / "m", tiny_tiramisu, bundle_metadata(magnification="10x"))
    meta = bundle_metadata()
    meta["targets"] = ["dapi"]
    with pytest.raises(BundleError, match="unknown target 'dapi'"):
        save_bundle(tmp_path / "m", tiny_tiramisu, meta)


def test_find_bundles_expands_folders(tmp_path, tiny_tiramisu):
    a = save_bundle(tmp_path / "models" / "a", tiny_tiramisu, bundle_metadata())
    b = save_bundle(tmp_path / "models" / "b", tiny_tiramisu, bundle_metadata(targets=("cytoplasm",)))
    assert find_bundles([tmp_path / "models"]) == [a, b]
    assert find_bundles([b]) == [b]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="holds no .safetensors"):
        find_bundles([tmp_path / "empty"])
