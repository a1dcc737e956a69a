"""`vstain predict` and `vstain export`, end to end at toy size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiny_bundles import bundle_metadata, write_plate
from vstain.cli import main
from vstain.inference.bundle import save_bundle
from vstain.plate.tiff import read_tiff


def test_predict_command(tmp_path, tiny_tiramisu, capsys):
    save_bundle(tmp_path / "models" / "lipids", tiny_tiramisu, bundle_metadata())
    plate = write_plate(tmp_path / "plate", fields=(1, 2), shape=(32, 48))
    out = tmp_path / "out"
    code = main(["predict", "--models", str(tmp_path / "models"), "--input", str(plate), "--output", str(out),
                 "--mode", "tiles", "--tile-size", "32", "--overlap", "8", "--no-progress"])
    assert code == 0
    assert "predicted 2 fields, skipped 0" in capsys.readouterr().out
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == ["AssayPlate_Test_B02_T0001F001L01A02Z01C02.tif", "AssayPlate_Test_B02_T0001F002L01A02Z01C02.tif"]
    assert read_tiff(out / names[0]).dtype == np.uint16
    assert json.loads((out / "predictions.json").read_text())["settings"]["tiler"]["mode"] == "tiles"
    assert main(["predict", "--models", str(tmp_path / "models"), "--input", str(plate), "--output", str(out),
                 "--mode", "tiles", "--tile-size", "32", "--overlap", "8", "--no-progress"]) == 0
    assert "predicted 0 fields, skipped 2" in capsys.readouterr().out


def test_predict_command_errors_are_one_line(tmp_path, tiny_tiramisu, capsys):
    plate = write_plate(tmp_path / "plate", fields=(1,), shape=(32, 32))
    code = main(["predict", "--models", str(tmp_path / "nope.safetensors"), "--input", str(plate),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "no such model bundle" in err
    save_bundle(tmp_path / "m40", tiny_tiramisu, bundle_metadata(magnification="40x"))
    code = main(["predict", "--models", str(tmp_path / "m40.safetensors"), "--input", str(plate),
                 "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "holds 20x fields but the models are for 40x" in err


def test_export_command(tmp_path, tiny_tiramisu, capsys):
    pytest.importorskip("onnxruntime")
    bundle = save_bundle(tmp_path / "lipids", tiny_tiramisu, bundle_metadata())
    assert main(["export", "--onnx", str(bundle), "--out", str(tmp_path / "lipids.onnx")]) == 0
    assert "max |ONNX - PyTorch|" in capsys.readouterr().out
    assert (tmp_path / "lipids.onnx").stat().st_size > 0


def test_help_shows_examples(capsys):
    for command in ("predict", "export", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example:" in capsys.readouterr().out


def test_predict_command_applies_the_bundles_intensity_map_unless_told_not_to(tmp_path, tiny_tiramisu, capsys):
    from vstain.inference.intensity_map import IntensityMap

    plate = write_plate(tmp_path / "plate", fields=(1,), shape=(32, 48))
    doubling = IntensityMap((0.0, 30000.0), (0.0, 60000.0)).to_dict()
    save_bundle(tmp_path / "plain" / "lipids", tiny_tiramisu, bundle_metadata())
    save_bundle(tmp_path / "mapped" / "lipids", tiny_tiramisu,
                {**bundle_metadata(), "intensity_map": {"lipids": doubling}})
    outputs = {}
    for name, models, extra in (("plain", "plain", []), ("mapped", "mapped", []),
                                ("raw", "mapped", ["--no-intensity-map"])):
        assert main(["predict", "--models", str(tmp_path / models), "--input", str(plate), "--output",
                     str(tmp_path / name), "--no-progress", *extra]) == 0
        outputs[name] = read_tiff(next((tmp_path / name).glob("*C02.tif"))).astype(int)
    np.testing.assert_array_equal(outputs["raw"], outputs["plain"])
    assert np.abs(outputs["mapped"] - 2 * outputs["plain"]).max() <= 1  # rounding before vs after doubling
    assert outputs["plain"].max() > 0
    assert main(["predict", "--models", str(tmp_path / "mapped"), "--input", str(plate), "--output",
                 str(tmp_path / "x"), "--no-intensity-map", "--calibration", str(tmp_path / "c.json")]) == 2
    assert "--no-intensity-map cannot go with --calibration" in capsys.readouterr().err


def test_predict_command_margin_changes_only_the_edges_and_is_refused_with_calibration(tmp_path, tiny_tiramisu,
                                                                                       capsys):
    save_bundle(tmp_path / "models" / "lipids", tiny_tiramisu, bundle_metadata())
    plate = write_plate(tmp_path / "plate", fields=(1,), shape=(96, 112))
    outputs = {}
    for name, extra in (("default", []), ("none", ["--margin", "0"]), ("wide", ["--margin", "64"])):
        assert main(["predict", "--models", str(tmp_path / "models"), "--input", str(plate), "--output",
                     str(tmp_path / name), "--no-progress", *extra]) == 0
        outputs[name] = read_tiff(next((tmp_path / name).glob("*C02.tif"))).astype(int)
        tiler = json.loads((tmp_path / name / "predictions.json").read_text())["settings"]["tiler"]
        assert tiler.get("margin", 0) == (0 if name == "none" else 64)
    np.testing.assert_array_equal(outputs["default"], outputs["wide"])
    edge = np.zeros((96, 112), dtype=bool)
    edge[:8], edge[-8:], edge[:, :8], edge[:, -8:] = True, True, True, True
    differs = outputs["none"] != outputs["default"]
    assert differs[edge].any()  # the networks' zero padding at the field's edge is what the margin replaces
    for bad, says in ((["--margin", "-3"], "margin must be a whole number"),
                      (["--mode", "tiles", "--tile-size", "30"], "tile size 30 must be a multiple of 16")):
        assert main(["predict", "--models", str(tmp_path / "models"), "--input", str(plate), "--output",
                     str(tmp_path / "x"), *bad, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err  # one line, not a traceback
    assert main(["predict", "--models", str(tmp_path / "models"), "--input", str(plate), "--output",
                 str(tmp_path / "y"), "--margin", "0", "--calibration", str(tmp_path / "c.json")]) == 2
    assert "does not take --margin" in capsys.readouterr().err
