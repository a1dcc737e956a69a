"""`vstain predict`, `vstain export` and the bench machinery, end to end at toy size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import bundle_metadata, write_plate

from vstain.cli import main
from vstain.inference.benchmark import BenchSizes, Variant, bench_inference, bench_training, format_table, stain_networks
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
                 "--no-progress"]) == 0
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


def test_bench_machinery_on_tiny_networks():
    sizes = BenchSizes(fields=((48, 64),), reference_batch=2, tile_batch=2, gan_batch=1, lupi_batch=1,
                       crop=32, train_steps=1, repeats=1)
    device = torch.device("cpu")
    network = stain_networks(tiny=True)
    variants = [Variant("reference", "reference"), Variant("whole", "whole"),
                Variant("whole cl", "whole", channels_last=True)]
    rows = bench_inference(network, device=device, sizes=sizes, variants=variants, log=lambda _: None)
    assert [r["variant"] for r in rows] == ["reference", "whole", "whole cl"]
    assert all(r["error"] is None and r["seconds_per_field"] > 0 for r in rows)
    assert rows[0]["speedup_vs_reference"] == pytest.approx(1.0) and rows[0]["tiles"] == 1
    assert not network.channels_last  # variants do not leak their memory format into the next
    training = bench_training(device=device, sizes=sizes, tiny=True, log=lambda _: None)
    assert [r["recipe"] for r in training] == ["gan (G + D)"] * 2 + ["nuclei lupi"] * 2
    assert all(r["error"] is None and r["images_per_s"] > 0 for r in training), training
    table = format_table({"device": "cpu", "torch": torch.__version__, "inference": rows, "training": training})
    assert "reference" in table and "img/s" in table


def test_bench_reports_the_evaluation_with_one_and_the_default_threads():
    from vstain.evaluation.pipeline import default_threads
    from vstain.inference.benchmark import bench_evaluation

    rows = bench_evaluation((96, 112), log=lambda _: None)
    assert [r["threads"] for r in rows] == sorted({1, default_threads()})
    assert all(r["field"] == "96x112" and r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in rows)
    assert rows[0]["objects"] == rows[-1]["objects"]  # threads change the time, not the result
    table = format_table({"device": "cpu", "torch": torch.__version__, "inference": [], "evaluation": rows})
    assert "measure_field" in table and "96x112" in table
