"""Predictor: field prediction, plate streaming to CV7000-named uint16 TIFFs, resume, sharding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vstain
from tiny_bundles import TINY_TIRAMISU, bundle_metadata, write_plate
from vstain.errors import PlateError, VstainError
from vstain.inference.bundle import BundleError, save_bundle
from vstain.inference.distributed import RankInfo, rank_info, shard
from vstain.inference.predictor import MANIFEST_NAME, UNCERTAINTY_DIR, to_uint16
from vstain.inference.tiler import DEFAULT_MARGIN
from vstain.plate.index import index_plate
from vstain.plate.normalize import Normalizer
from vstain.plate.tiff import read_tiff


@pytest.fixture
def lipids_bundle(tmp_path, tiny_tiramisu):
    return save_bundle(tmp_path / "models" / "lipids_20x", tiny_tiramisu, bundle_metadata())


def test_to_uint16_rounds_and_clips():
    values = torch.tensor([-3.0, 0.49, 0.5, 1.5, 2.51, 65534.6, 70000.0], dtype=torch.float64)
    np.testing.assert_array_equal(to_uint16(values), np.array([0, 0, 0, 2, 3, 65535, 65535], dtype=np.uint16))


def test_predict_field_denormalises_rounds_and_clips(tmp_path, tiny_tiramisu):
    rng = np.random.default_rng(0)
    brightfield = rng.integers(0, 1000, (7, 48, 64), dtype=np.uint16)
    input_norm = Normalizer.from_dict(bundle_metadata()["normalization"]["input"])
    with torch.inference_mode():
        raw = tiny_tiramisu(torch.from_numpy(input_norm.forward(brightfield))[None])[0, 0].numpy()
    # a target range that sends the darkest ~10 % below 0 and the brightest ~10 % above 65535
    lo_q, hi_q = np.percentile(raw, [10, 90])
    span = 65535 / (hi_q - lo_q)
    low, high = -lo_q * span, (1 - lo_q) * span
    path = save_bundle(tmp_path / "m", tiny_tiramisu, bundle_metadata(target_range=(low, high)))
    out = vstain.Predictor([path], margin=0).predict_field(brightfield)  # the bare field, as `raw` above
    assert list(out) == ["lipids"] and out["lipids"].dtype == np.uint16 and out["lipids"].shape == (48, 64)
    expected = Normalizer.from_dict(vstain.load_model(path).metadata.normalization["targets"]["lipids"]).inverse(
        raw, dtype=np.uint16)
    np.testing.assert_array_equal(out["lipids"], expected)
    assert (out["lipids"] == 0).mean() > 0.05 and (out["lipids"] == 65535).mean() > 0.05


def test_predict_plate_writes_cv7000_names_and_resumes(tmp_path, lipids_bundle):
    plate = write_plate(tmp_path / "plate", wells=("B02", "C03"), fields=(1, 2))
    out = tmp_path / "out"
    predictor = vstain.Predictor([lipids_bundle], mode="tiles", tile_size=32, overlap=8, batch_size=3)
    manifest = predictor.predict_plate(plate, out, progress=False)
    fields = index_plate(plate).fields
    expected = sorted(f.target_filename("lipids") for f in fields)
    assert sorted(p.name for p in out.glob("*.tif")) == expected
    assert expected[0] == "AssayPlate_Test_B02_T0001F001L01A02Z01C02.tif"
    image = read_tiff(out / expected[0])
    assert image.dtype == np.uint16 and image.shape == (64, 80)
    np.testing.assert_array_equal(image, predictor.predict_field(fields[0].read_brightfield())["lipids"])
    assert manifest["fields"] == {"plate": 4, "this_rank": 4, "predicted": 4, "skipped_existing": 0, "skipped_bad": 0}
    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    assert on_disk["settings"]["tiler"] == {"mode": "tiles", "tile_size": 32, "overlap": 8, "margin": DEFAULT_MARGIN}
    assert on_disk["models"][0]["targets"] == ["lipids"] and on_disk["timings"]["compute"]["total_s"] > 0

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    again = predictor.predict_plate(plate, out, progress=False)
    assert again["fields"]["predicted"] == 0 and again["fields"]["skipped_existing"] == 4
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    (out / expected[1]).unlink()
    third = predictor.predict_plate(plate, out, progress=False)
    assert third["fields"]["predicted"] == 1 and (out / expected[1]).is_file()
    assert not list(out.glob(".*.part"))  # no temporary files left behind


def test_all_three_stains_from_two_bundles_with_uncertainty(tmp_path, tiny_tiramisu):
    from vstain.models import build_model

    torch.manual_seed(3)
    lupi = build_model("lupi", **TINY_TIRAMISU).eval()
    multi = build_model("tiramisu_multi", out_channels=2, **TINY_TIRAMISU).eval()
    models = [
        save_bundle(tmp_path / "m" / "nuclei", lupi, bundle_metadata("lupi", targets=("nuclei",))),
        save_bundle(tmp_path / "m" / "both", multi, bundle_metadata(
            "tiramisu_multi", arguments={**TINY_TIRAMISU, "out_channels": 2}, targets=("lipids", "cytoplasm"))),
    ]
    plate = write_plate(tmp_path / "plate", fields=(1,), shape=(40, 56))
    predictor = vstain.Predictor([tmp_path / "m"], tta=8, uncertainty=True)
    assert predictor.targets("20x") == ["nuclei", "lipids", "cytoplasm"]
    manifest = predictor.predict_plate(plate, tmp_path / "out", progress=False)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.tif"))
    assert [n[-7:] for n in names] == ["C01.tif", "C02.tif", "C03.tif"]
    spreads = sorted(p.name for p in (tmp_path / "out" / UNCERTAINTY_DIR).glob("*.tif"))
    assert spreads == names
    assert read_tiff(tmp_path / "out" / UNCERTAINTY_DIR / names[0]).dtype == np.uint16
    assert manifest["settings"]["tta"] == 8 and len(models) == 2
    images, spread = predictor.predict_field(index_plate(plate).fields[0].read_brightfield(), return_uncertainty=True)
    np.testing.assert_array_equal(images["lipids"], read_tiff(tmp_path / "out" / names[1]))
    assert spread["nuclei"].max() > 0


def test_each_bundle_gets_its_own_tta_unless_one_is_asked_for(tmp_path, tiny_tiramisu):
    from vstain.models import build_model

    torch.manual_seed(4)
    other = build_model("tiramisu", **TINY_TIRAMISU).eval()
    chose_8 = save_bundle(tmp_path / "m" / "lipids", tiny_tiramisu, {**bundle_metadata(), "tta": 8})
    said_nothing = save_bundle(tmp_path / "m" / "cytoplasm", other, bundle_metadata(targets=("cytoplasm",)))
    brightfield = np.random.default_rng(2).integers(0, 1000, (7, 40, 56)).astype(np.uint16)

    def alone(bundle, tta):
        return vstain.Predictor([bundle], tta=tta).predict_field(brightfield)

    both = vstain.Predictor([tmp_path / "m"])
    images = both.predict_field(brightfield)
    np.testing.assert_array_equal(images["lipids"], alone(chose_8, 8)["lipids"])
    np.testing.assert_array_equal(images["cytoplasm"], alone(said_nothing, 1)["cytoplasm"])
    assert not np.array_equal(alone(chose_8, 8)["lipids"], alone(chose_8, 1)["lipids"])
    assert both.settings()["tta"] == {"20x": {"lipids": 8, "cytoplasm": 1}}
    assert [both.provenance("20x", t)["settings"]["tta"] for t in ("lipids", "cytoplasm")] == [8, 1]
    # An explicit setting overrides the bundles' choices.
    forced = vstain.Predictor([tmp_path / "m"], tta=1)
    np.testing.assert_array_equal(forced.predict_field(brightfield)["lipids"], alone(chose_8, 1)["lipids"])
    assert forced.settings()["tta"] == 1
    # Uncertainty maps need all eight transforms, asked for: a bundle's choice is not enough.
    with pytest.raises(VstainError, match="--tta 8"):
        vstain.Predictor([chose_8], uncertainty=True)
    with pytest.raises(VstainError, match="`tta` must be one of 1, 8 or None"):
        vstain.Predictor([chose_8], tta=True)


@pytest.mark.parametrize("stored", [4, True, "8"])
def test_a_bundle_with_an_unknown_tta_is_refused(tmp_path, tiny_tiramisu, stored):
    with pytest.raises(BundleError, match="'tta' must be null or one of 1, 8"):
        save_bundle(tmp_path / "m", tiny_tiramisu, {**bundle_metadata(), "tta": stored})


def test_incompatible_plates_and_model_sets_are_refused(tmp_path, tiny_tiramisu, lipids_bundle):
    plate40 = write_plate(tmp_path / "plate40", fields=(1,), magnification="40x")
    predictor = vstain.Predictor([lipids_bundle])
    with pytest.raises(BundleError, match="holds 40x fields but the models are for 20x"):
        predictor.predict_plate(plate40, tmp_path / "out", progress=False)
    twin = save_bundle(tmp_path / "twin", tiny_tiramisu, bundle_metadata())
    with pytest.raises(BundleError, match="two 20x models predict lipids"):
        vstain.Predictor([lipids_bundle, twin])
    with pytest.raises(vstain.errors.VstainError, match="needs test-time augmentation"):
        vstain.Predictor([lipids_bundle], uncertainty=True)
    plate20 = write_plate(tmp_path / "plate20", fields=(1,), shape=(32, 32))
    with pytest.raises(vstain.errors.PlateError, match="is the plate's image folder"):
        predictor.predict_plate(plate20, plate20 / "20x_images", progress=False)
    with pytest.raises(vstain.errors.VstainError, match=r"\(7, H, W\)"):
        predictor.predict_field(np.zeros((5, 16, 16), dtype=np.uint16))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_cover_every_field_exactly_once(world_size):
    items = list(range(10))
    shares = [shard(items, rank, world_size) for rank in range(world_size)]
    assert sorted(i for share in shares for i in share) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError):
        shard(items, world_size, world_size)


def test_rank_info_reads_the_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_info() == RankInfo(rank=2, world_size=4, local_rank=0)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    assert rank_info() == RankInfo()


def test_ranks_split_a_plate_without_duplicates_and_merge_the_manifest(tmp_path, lipids_bundle):
    plate = write_plate(tmp_path / "plate", wells=("B02",), fields=(1, 2, 3), shape=(32, 32))
    out = tmp_path / "out"
    predictor = vstain.Predictor([lipids_bundle])
    parts = [predictor.predict_plate(plate, out, progress=False, rank=RankInfo(r, 2, r)) for r in range(2)]
    assert [p["fields"]["predicted"] for p in parts] == [2, 1]
    assert len(list(out.glob("*.tif"))) == 3
    merged = json.loads((out / MANIFEST_NAME).read_text())
    assert merged["fields"]["predicted"] == 3 and merged["world_size"] == 2 and merged["rank"] == "all"


def test_the_module_docstring_example_runs():
    import doctest

    import vstain.inference.predictor as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 15


def test_ranks_merge_only_parts_made_alike_and_a_starting_rank_removes_the_merge(tmp_path, lipids_bundle):
    plate = write_plate(tmp_path / "plate", wells=("B02",), fields=(1, 2, 3), shape=(32, 32))
    out = tmp_path / "out"
    predictor = vstain.Predictor([lipids_bundle])
    for r in range(2):
        predictor.predict_plate(plate, out, progress=False, rank=RankInfo(r, 2, r))
    parts = [out / f"predictions.rank-{r}-of-2.json" for r in range(2)]
    # rank 1's part as an earlier run with another model left it (its rank died before rerunning):
    # rank 0, rerun with --overwrite, must not merge it, and the old merge must be gone
    old = json.loads(parts[1].read_text())
    old["models"][0]["sha256"] = "0" * 64
    parts[1].write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="predictions.rank-1-of-2.json were made by other models"):
        predictor.predict_plate(plate, out, progress=False, rank=RankInfo(0, 2, 0), overwrite=True)
    assert not (out / MANIFEST_NAME).exists()
    predictor.predict_plate(plate, out, progress=False, rank=RankInfo(1, 2, 1), overwrite=True)
    assert json.loads((out / MANIFEST_NAME).read_text())["fields"]["predicted"] == 3
    # a rank rerun alone merges with the other's part when the outputs were made alike; the
    # device (cuda:N per rank) and speed settings do not count
    other = json.loads(parts[0].read_text())
    other["settings"]["device"], other["settings"]["batch_size"] = "cuda:1", 99
    parts[0].write_text(json.dumps(other))
    predictor.predict_plate(plate, out, progress=False, rank=RankInfo(1, 2, 1))
    merged = json.loads((out / MANIFEST_NAME).read_text())
    assert merged["fields"]["predicted"] == 2 and merged["fields"]["skipped_existing"] == 1
    # outputs without the bundles' intensity maps are other outputs
    plain = vstain.Predictor([lipids_bundle], intensity_map=False)
    assert _settings_differ(predictor, plain)
    # a rank that fails mid-run leaves neither its part nor the merge
    broken = next(p for p in (plate / "20x_images").glob("*F001*C04.tif"))
    broken.write_bytes(broken.read_bytes()[:-100])  # header intact, pixel data short
    with pytest.raises(PlateError):
        predictor.predict_plate(plate, out, progress=False, rank=RankInfo(0, 2, 0), overwrite=True)
    assert not parts[0].exists() and not (out / MANIFEST_NAME).exists() and parts[1].exists()


def _settings_differ(a: vstain.Predictor, b: vstain.Predictor) -> bool:
    from vstain.inference.predictor import _made_by

    made = [_made_by({"models": [m.summary() for m in p.bundles], "settings": p.settings()}) for p in (a, b)]
    return made[0] != made[1]
