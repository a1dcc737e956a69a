"""The run summary: it says loudly when the model is worse than the per-pixel linear regression."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from vstain.evaluation.baselines import LinearBaseline
from vstain.training.run_summary import RunSummary, linear_baseline_errors


class _Field:
    def __init__(self, brightfield, targets, label):
        self.brightfield, self.targets, self.label = brightfield, targets, label

    def read_brightfield(self):
        return self.brightfield

    def read_target(self, target):
        return self.targets[target]


def _fields(n, seed):
    rng = np.random.default_rng(seed)
    fields = []
    for i in range(n):
        bf = rng.integers(1000, 3000, (7, 32, 32)).astype(np.uint16)
        # An exactly linear stain of plane 2 (plus an offset): the baseline fits it perfectly.
        stain = (bf[2].astype(np.int64) // 2 + 100).astype(np.uint16)
        fields.append(_Field(bf, {"lipids": stain}, f"B02 F{i + 1:03d}"))
    return fields


def test_linear_errors_are_the_pixel_metric_of_the_fitted_baseline():
    train, val = _fields(3, 0), _fields(2, 1)
    errors = linear_baseline_errors(train, val, ["lipids"], pixels_per_field=500)
    assert errors["lipids"] == pytest.approx(0.0, abs=2e-3)  # the stain is linear in the planes
    baseline = LinearBaseline.fit(((f.read_brightfield(), f.targets) for f in train), pixels_per_field=500)
    truth = np.concatenate([f.targets["lipids"].ravel() for f in val]).astype(float)
    pred = np.concatenate([baseline.predict(f.read_brightfield())["lipids"].ravel() for f in val]).astype(float)
    assert errors["lipids"] == pytest.approx(np.abs(truth - pred).mean() / np.median(truth))


def _check(tmp_path, linear, history):
    lines = []
    datamodule = SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(targets=["nuclei", "lipids"])))
    check = RunSummary(datamodule, tmp_path, monitor="val/pixel_rel_mae", log=lines.append)
    check.linear = linear
    check.history = history
    trainer = SimpleNamespace(is_global_zero=True)
    module = SimpleNamespace(cfg=SimpleNamespace(name="run"))
    check.on_fit_end(trainer, module)
    return check, lines, json.loads((tmp_path / "summary.json").read_text())


def test_a_model_worse_than_linear_on_one_stain_is_reported_loudly(tmp_path):
    history = [{"epoch": 0.0, "monitor": 0.9, "nuclei": 1.0, "lipids": 0.8},
               {"epoch": 1.0, "monitor": 0.5, "nuclei": 0.6, "lipids": 0.4},   # the exported epoch
               {"epoch": 2.0, "monitor": 0.7, "nuclei": 0.3, "lipids": 1.1}]
    check, lines, summary = _check(tmp_path, {"nuclei": 0.5, "lipids": 0.45}, history)
    verdict = summary["validation"]
    assert verdict["best_epoch"] == 1 and verdict["beats_linear"] is False
    assert verdict["per_target"]["nuclei"] == {"model": 0.6, "linear": 0.5, "beats_linear": False}
    assert verdict["per_target"]["lipids"]["beats_linear"] is True
    assert len(lines) == 1 and "WARNING: nuclei" in lines[0] and "WORSE" in lines[0] and "0.6 " in lines[0]


def test_a_model_that_beats_linear_everywhere_says_so(tmp_path):
    check, lines, summary = _check(tmp_path, {"nuclei": 0.9, "lipids": 0.9},
                                   [{"epoch": 0.0, "monitor": 0.5, "nuclei": 0.6, "lipids": 0.4}])
    assert summary["validation"]["beats_linear"] is True
    assert len(lines) == 1 and "beats the linear baseline" in lines[0]


def test_without_the_linear_baseline_the_summary_still_records_the_exported_epoch(tmp_path):
    datamodule = SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(targets=["nuclei"])))
    summary = RunSummary(datamodule, tmp_path, monitor="val/pixel_rel_mae", linear_baseline=False)
    summary.on_fit_start(SimpleNamespace(is_global_zero=True), None)  # fits nothing
    assert not (tmp_path / "linear_baseline.json").exists()
    summary.history = [{"epoch": 0.0, "monitor": 0.4, "nuclei": 0.4, "iou": 0.2},
                       {"epoch": 1.0, "monitor": 0.3, "nuclei": 0.3, "iou": 0.6}]
    summary.on_fit_end(SimpleNamespace(is_global_zero=True), SimpleNamespace(cfg=SimpleNamespace(name="run")))
    verdict = json.loads((tmp_path / "summary.json").read_text())["validation"]
    assert verdict == {"best_epoch": 1, "monitor": "val/pixel_rel_mae", "best_score": 0.3,
                       "per_target": {"nuclei": {"model": 0.3}}, "iou": 0.6}


def test_a_nuclei_model_whose_segmentation_never_found_the_nuclei_is_reported_loudly(tmp_path):
    lines = []
    datamodule = SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(targets=["nuclei"])))
    summary = RunSummary(datamodule, tmp_path, monitor="val/pixel_rel_mae", linear_baseline=False, log=lines.append)
    summary.history = [{"epoch": 0.0, "monitor": 0.14, "nuclei": 0.14, "iou": 0.0},   # exported: flat background
                       {"epoch": 1.0, "monitor": 0.15, "nuclei": 0.15, "iou": 0.1}]
    summary.on_fit_end(SimpleNamespace(is_global_zero=True), SimpleNamespace(cfg=SimpleNamespace(name="run")))
    assert len(lines) == 1 and "WARNING" in lines[0] and "only 0.00" in lines[0] and "at most 0.10" in lines[0]
    # exactly at the bar still warns (the benchmark's target is IoU *above* 0.5, check_targets agrees);
    # just above it, nothing to warn about (the verdict records the IoU either way)
    for iou, warned in ((0.5, True), (0.51, False)):
        lines.clear()
        summary.history = [{"epoch": 0.0, "monitor": 0.14, "nuclei": 0.14, "iou": iou}]
        summary.on_fit_end(SimpleNamespace(is_global_zero=True), SimpleNamespace(cfg=SimpleNamespace(name="run")))
        assert bool(lines) is warned
        assert summary.verdict["iou"] == iou


def test_history_survives_a_resume_through_the_callback_state():
    datamodule = SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(targets=["lipids"])))
    first = RunSummary(datamodule, "unused", monitor="m")
    first.history = [{"epoch": 0.0, "monitor": 0.3, "lipids": 0.3}]
    second = RunSummary(datamodule, "unused", monitor="m")
    second.load_state_dict(first.state_dict())
    assert second.history == first.history
