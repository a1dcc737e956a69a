"""predict --output X.ome.zarr: an HCS plate of predictions, resumable, written by several torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import vstain
from tiny_bundles import TINY_TIRAMISU, bundle_metadata, write_plate
from vstain.errors import PlateError
from vstain.inference.bundle import save_bundle
from vstain.inference.distributed import RankInfo
from vstain.plate.index import index_plate
from vstain.plate.omezarr import extra_planes
from vstain.plate.tiff import read_tiff


@pytest.fixture
def lipids_bundle(tmp_path, tiny_tiramisu):
    return save_bundle(tmp_path / "models" / "lipids_20x", tiny_tiramisu, bundle_metadata())


def test_zarr_predictions_equal_the_tiffs_with_uncertainty_and_validate(tmp_path, lipids_bundle):
    from ome_zarr_models import open_ome_zarr

    plate = write_plate(tmp_path / "plate", wells=("B02", "C03"), fields=(1, 2), shape=(32, 40))
    predictor = vstain.Predictor([lipids_bundle], tta=8, uncertainty=True)
    predictor.predict_plate(plate, tmp_path / "tiff", progress=False)
    manifest = predictor.predict_plate(plate, tmp_path / "pred.ome.zarr", progress=False)
    assert manifest["fields"]["predicted"] == 4
    model = open_ome_zarr(tmp_path / "pred.ome.zarr")  # an independent NGFF reader accepts it
    assert model.n_wells == 2 and len(list(model.well_groups)) == 2
    index = index_plate(tmp_path / "pred.ome.zarr", require="targets", check_pixels=True)
    assert index.errors == []
    warnings = [i.message for i in index.issues]
    assert len(warnings) == 4 and all("lacks C01 (nuclei), C03 (cytoplasm)" in w for w in warnings)
    assert index_plate(tmp_path / "pred.ome.zarr").fields == []  # a prediction plate has no brightfield
    # every plane equals the TIFF written by the same predictor, names kept
    truth_index = index_plate(plate)
    for field in truth_index.fields:
        name = field.target_filename("lipids")
        zarr_fields = [f for f in _lipid_fields(tmp_path / "pred.ome.zarr") if f.key == field.key]
        assert len(zarr_fields) == 1
        plane = zarr_fields[0].targets["lipids"]
        assert plane.name == name
        np.testing.assert_array_equal(plane.read(), read_tiff(tmp_path / "tiff" / name))
        (label, spread), = extra_planes(zarr_fields[0])
        assert label == "C02 std"
        np.testing.assert_array_equal(spread.read(), read_tiff(tmp_path / "tiff" / "uncertainty" / name))
    # resumable: a rerun predicts nothing; another model's run is refused with one line
    again = predictor.predict_plate(plate, tmp_path / "pred.ome.zarr", progress=False)
    assert again["fields"]["predicted"] == 0 and again["fields"]["skipped_existing"] == 4
    other = save_bundle(tmp_path / "models" / "other", _other_network(), bundle_metadata())
    with pytest.raises(PlateError, match="was predicted by .* rerun with --overwrite"):
        vstain.Predictor([other], tta=8, uncertainty=True).predict_plate(plate, tmp_path / "pred.ome.zarr",
                                                                         progress=False)


def _lipid_fields(path):
    """Fields of a lipids-only prediction plate (the index wants all three stains for evaluation)."""
    import json
    from pathlib import Path

    from vstain.plate.images import ZarrPlane
    from vstain.plate.index import Field

    fields = []
    for image_json in sorted(Path(path).glob("*/*/*/zarr.json")):
        attrs = json.loads(image_json.read_text())["attributes"]
        identity = attrs["vstain"]["identity"]
        array = image_json.parent / "0"
        plane = ZarrPlane(array=array, index=0, channel="C02", name=identity["channels"]["C02"], chunk="c/0/0/0")
        fields.append(Field(plate=identity["plate"], well=identity["well"], field=identity["field"],
                            magnification=identity["magnification"], brightfield=(), targets={"lipids": plane}))
    return fields


def _other_network():
    import torch

    from vstain.models import build_model

    torch.manual_seed(1)
    return build_model("tiramisu", **TINY_TIRAMISU).eval()


def test_two_ranks_write_one_zarr_plate_in_disjoint_chunks(tmp_path, lipids_bundle):
    plate = write_plate(tmp_path / "plate", wells=("B02",), fields=(1, 2, 3), shape=(32, 32))
    predictor = vstain.Predictor([lipids_bundle])
    predictor.predict_plate(plate, tmp_path / "one.ome.zarr", progress=False)
    # two real processes, as torchrun starts them on two GPUs (here on the CPU)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "0",
               "-m", "vstain", "predict", "--models", str(lipids_bundle), "--input", str(plate),
               "--output", str(tmp_path / "two.ome.zarr"), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-8000:]  # the failing rank's traceback precedes the launcher's summary
    merged = __import__("json").loads((tmp_path / "two.ome.zarr" / "predictions.json").read_text())
    assert merged["fields"]["predicted"] == 3 and merged["world_size"] == 2
    one, two = _lipid_fields(tmp_path / "one.ome.zarr"), _lipid_fields(tmp_path / "two.ome.zarr")
    assert [f.key for f in one] == [f.key for f in two] and len(one) == 3
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.targets["lipids"].read(), b.targets["lipids"].read())
    # the same, with the two ranks' shares written by one process after the other
    for r in range(2):
        predictor.predict_plate(plate, tmp_path / "seq.ome.zarr", progress=False, rank=RankInfo(r, 2, r))
    for a, b in zip(one, _lipid_fields(tmp_path / "seq.ome.zarr")):
        np.testing.assert_array_equal(a.targets["lipids"].read(), b.targets["lipids"].read())
