"""`vstain predict` with bad fields, bad output folders, mixed models and leftovers (issue 16, items 2, 3, 6, 9)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from vstain.inference.predictor import Predictor
from vstain.plate.tiff import read_tiff, write_tiff

STEM = "AssayPlate_Greiner_#655090_{well}_T0001F{field:03d}L01A04Z{z:02d}C04.tif"
PREDICTED = "AssayPlate_Greiner_#655090_{well}_T0001F{field:03d}L01A02Z01C02.tif"


def _plane(plate: Path, well="B02", field=1, z=3) -> Path:
    return plate / "20x_images" / STEM.format(well=well, field=field, z=z)


def _predicted(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.tif"))


def _spoil(plate: Path, how: str) -> Path:
    plane = _plane(plate)
    if how == "missing":
        plane.unlink()
    elif how == "float32":
        tifffile.imwrite(plane, np.zeros((64, 80), np.float32))
    elif how == "wrong size":
        write_tiff(plane, np.zeros((32, 80), np.uint16))
    elif how == "truncated":
        data = plane.read_bytes()
        plane.write_bytes(data[: len(data) // 2])
    return plane


@pytest.fixture
def infer_calls(monkeypatch):
    """Counts fields the networks were run on."""
    calls = []
    real = Predictor._infer

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "_infer", counting)
    return calls


@pytest.mark.parametrize("how", ["missing", "float32", "wrong size"])
def test_a_bad_field_stops_predict_before_anything_is_computed(random_plate, bundles, cli, one_line_error,
                                                               snapshot, infer_calls, tmp_path, how):
    plane = _spoil(random_plate, how)
    before = snapshot(random_plate)
    out = tmp_path / "out"
    code, stdout, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out,
                            "--no-progress")
    assert code == 2 and stdout == ""
    named = plane if how != "missing" else _plane(random_plate, z=1)  # the field's first plane names it
    one_line_error(err, named, "--skip-bad-fields", "3 good fields")
    assert infer_calls == [] and not out.exists()
    assert snapshot(random_plate) == before


def test_skip_bad_fields_predicts_the_others_and_lists_the_bad(random_plate, bundles, cli, tmp_path):
    _spoil(random_plate, "float32")
    truncated = _spoil_other(random_plate)
    out = tmp_path / "out"
    code, stdout, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out,
                            "--no-progress", "--skip-bad-fields")
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: skipped bad field 20x B0") for w in warnings)
    assert "20x B02 F001" in err and str(truncated) in err
    assert _predicted(out) == [PREDICTED.format(well=w, field=f) for w, f in (("B02", 2), ("B03", 1))]
    manifest = json.loads((out / "predictions.json").read_text())
    assert sorted(b["field"] for b in manifest["bad_fields"]) == ["20x B02 F001", "20x B03 F002"]
    assert manifest["fields"]["predicted"] == 2 and manifest["fields"]["skipped_bad"] == 2
    assert "2 bad" in stdout


def _spoil_other(plate: Path) -> Path:
    """Truncate a plane of B03 F002 (header intact: only reading its pixels fails)."""
    plane = _plane(plate, well="B03", field=2, z=5)
    data = plane.read_bytes()
    plane.write_bytes(data[: len(data) // 2])
    return plane


def test_truncated_plane_stops_predict_with_one_line(random_plate, bundles, cli, one_line_error, tmp_path):
    plane = _spoil_other(random_plate)
    out = tmp_path / "out"
    code, _, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")
    assert code == 2
    one_line_error(err, plane, "--skip-bad-fields")
    for name in _predicted(out):  # fields done before it are whole files, kept for the rerun
        assert read_tiff(out / name).shape == (64, 80)
    assert not list(out.glob(".*.part"))


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_output_that_is_or_lies_under_a_file(random_plate, bundles, cli, one_line_error, infer_calls, tmp_path, where):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep me")
    out = blocker if where == "a file" else blocker / "predictions"
    code, _, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")
    assert code == 2
    one_line_error(err, out, "--output")
    assert infer_calls == [] and blocker.read_text() == "keep me"


def test_output_that_is_not_writable(random_plate, bundles, cli, one_line_error, infer_calls, tmp_path, monkeypatch):
    out = tmp_path / "readonly"
    out.mkdir()
    real = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # what a folder without write permission does
        if Path(dir) == out:
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    code, _, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")
    assert code == 2
    one_line_error(err, out, "Permission denied", "--output")
    assert infer_calls == [] and list(out.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_output_without_write_permission(random_plate, bundles, cli, one_line_error, infer_calls, tmp_path):
    out = tmp_path / "readonly"
    out.mkdir(mode=0o555)
    try:
        code, _, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out,
                           "--no-progress")
    finally:
        out.chmod(0o755)
    assert code == 2
    one_line_error(err, out, "--output")
    assert infer_calls == []


def test_rerun_with_another_model_refuses_to_mix_and_overwrite_recomputes(random_plate, bundles, cli, one_line_error,
                                                                         snapshot, tmp_path):
    out = tmp_path / "out"
    assert cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")[0] == 0
    for name in _predicted(out)[2:]:  # as if the run had been killed after two fields
        (out / name).unlink()
    kept = snapshot(out)
    a, b = (hashlib.sha256(bundles[k].read_bytes()).hexdigest() for k in "AB")
    code, _, err = cli("predict", "--models", bundles["B"], "--input", random_plate, "--output", out, "--no-progress")
    assert code == 2
    one_line_error(err, out / _predicted(out)[0], a[:12], b[:12], "--overwrite")
    assert snapshot(out) == kept  # nothing of model A's outputs lost, nothing of B's written

    code, stdout, _ = cli("predict", "--models", bundles["B"], "--input", random_plate, "--output", out,
                          "--no-progress", "--overwrite")
    assert code == 0 and "predicted 4 fields" in stdout
    fresh = tmp_path / "fresh"
    assert cli("predict", "--models", bundles["B"], "--input", random_plate, "--output", fresh, "--no-progress")[0] == 0
    assert _predicted(out) == _predicted(fresh) and len(_predicted(out)) == 4
    from vstain.inference.predictor import PROVENANCE_KEY
    from vstain.plate.tiff import tiff_description

    for name in _predicted(out):
        np.testing.assert_array_equal(read_tiff(out / name), read_tiff(fresh / name))
        recorded = json.loads(tiff_description(out / name))[PROVENANCE_KEY]
        assert recorded["model"]["sha256"] == b
    manifest = json.loads((out / "predictions.json").read_text())
    assert [m["sha256"] for m in manifest["models"]] == [b]


def test_rerun_with_other_settings_refuses_to_mix(random_plate, bundles, cli, one_line_error, snapshot, tmp_path):
    out = tmp_path / "out"
    assert cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")[0] == 0
    (out / _predicted(out)[-1]).unlink()
    kept = snapshot(out)
    code, _, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress",
                       "--tta", "8")
    assert code == 2
    one_line_error(err, "tta=1", "tta=8", "--overwrite")
    assert snapshot(out) == kept
    # speed settings are not a different run: the same models and tiling resume
    code, stdout, _ = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out,
                          "--no-progress", "--batch-size", "2")
    assert code == 0 and "predicted 1 fields, skipped 3 already done" in stdout


def test_outputs_that_do_not_say_who_wrote_them_are_not_taken_as_done(random_plate, bundles, cli, one_line_error,
                                                                       tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for well, field in (("B02", 1), ("B02", 2), ("B03", 1), ("B03", 2)):
        write_tiff(out / PREDICTED.format(well=well, field=field), np.zeros((64, 80), np.uint16))
    code, _, err = cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")
    assert code == 2
    one_line_error(err, "does not record which model wrote it", "--overwrite")


def test_leftover_part_files_of_a_killed_run_are_removed_by_the_rerun(random_plate, bundles, cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / PREDICTED.format(well="B02", field=1)
    # A process killed while writing (os._exit skips every clean-up, as kill -9 does).
    script = ("import os, sys; from vstain.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n    os._exit(9)\n")
    for path in (target, out / "predictions.json"):
        assert subprocess.run([sys.executable, "-c", script, str(path)]).returncode == 9
    leftovers = list(out.glob(".*.part"))
    assert len(leftovers) == 2 and all(p.stat().st_size == 0 for p in leftovers)
    foreign = out / ".notes.txt.abc123.part"  # not one of predict's outputs: left alone
    foreign.write_text("x")
    assert cli("predict", "--models", bundles["A"], "--input", random_plate, "--output", out, "--no-progress")[0] == 0
    assert list(out.glob(".*.part")) == [foreign]
    assert target.is_file()
