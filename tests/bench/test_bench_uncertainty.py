"""`vstain bench uncertainty`: the machinery end to end on a tiny plate (the numbers mean nothing at this size)."""

from __future__ import annotations

import json

import pytest

from vstain.bench.uncertainty import _spearman, run_uncertainty_benchmark, uncertainty_markdown


def test_spearman_by_hand():
    import numpy as np

    assert _spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 45.0])) == pytest.approx(1.0)
    assert _spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(_spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))  # no spread: undefined


def test_smoke_run_writes_coverage_adaptivity_and_times(tmp_path):
    summary = run_uncertainty_benchmark(tmp_path / "bu", alphas=(0.2,), smoke=True, log=lambda line: None)
    (level,) = summary["levels"]
    assert level["calibration_fields"] == 9 and level["test_fields"] == 9
    assert 0.0 <= level["nuclei_count"]["coverage"] <= 1.0
    assert 0.0 <= level["features"]["mean_coverage"] <= 1.0
    for stain in ("nuclei", "lipids", "cytoplasm"):
        pixels = level["pixels"][stain]
        assert 0.0 <= pixels["coverage"] <= 1.0 and pixels["mean_width"] > 0 and pixels["constant_width"] >= 0
    assert level["seconds"]["calibrate"] > 0 and level["seconds"]["predict_with_intervals"] > 0
    written = json.loads((tmp_path / "bu" / "uncertainty.json").read_text())
    assert written["levels"][0]["alpha"] == 0.2
    table = (tmp_path / "bu" / "uncertainty.md").read_text()
    assert table == uncertainty_markdown(summary) and "| 0.2 | 0.80 |" in table
    # A rerun reuses the models, the calibration parts and the predictions.
    again = run_uncertainty_benchmark(tmp_path / "bu", alphas=(0.2,), smoke=True, log=lambda line: None)
    def text(entry):  # NaN (an undefined correlation on 9 fields) compares equal as text
        return json.dumps(entry, sort_keys=True, default=float)

    assert text(again["levels"][0]["nuclei_count"]) == text(level["nuclei_count"])
    assert again["levels"][0]["seconds"] == {"calibrate": None, "predict_with_intervals": None}
    assert "reused, reused" in (tmp_path / "bu" / "uncertainty.md").read_text()


def test_uncertainty_bench_runs_alone(capsys):
    from vstain.cli import main

    assert main(["bench", "uncertainty", "training", "--out", "x"]) == 2
    assert "runs alone" in capsys.readouterr().err
