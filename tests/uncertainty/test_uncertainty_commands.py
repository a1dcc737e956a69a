"""vstain calibrate → vstain predict --calibration → vstain evaluate, end to end, and every refusal."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from vstain.cli import main
from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.inference.tiler import DEFAULT_MARGIN
from vstain.plate.tiff import read_tiff
from vstain.vocabulary import TARGETS


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def calibrated(small_plate, tiny_models, tmp_path_factory):
    """calibrate (α 0.4 on the 6 fields), predict with intervals, evaluate: the folders."""
    root = tmp_path_factory.mktemp("calibrated")
    cal = root / "calibration.json"
    assert main(["calibrate", "--models", str(tiny_models), "--input", str(small_plate), "--alpha", "0.4",
                 "--out", str(cal), "--no-progress"]) == 0
    pred = root / "pred"
    assert main(["predict", "--models", str(tiny_models), "--input", str(small_plate), "--output", str(pred),
                 "--calibration", str(cal), "--alpha", "0.4", "--no-progress"]) == 0
    evaluation = root / "eval"
    assert main(["evaluate", "--truth", str(small_plate / "20x_images"), "--pred", str(pred),
                 "--magnification", "20x", "--out", str(evaluation)]) == 0
    return {"cal": cal, "pred": pred, "eval": evaluation}


def test_evaluate_prints_the_coverage(calibrated, small_plate, capsys):
    assert main(["evaluate", "--truth", str(small_plate / "20x_images"), "--pred", str(calibrated["pred"]),
                 "--magnification", "20x", "--out", str(calibrated["eval"]), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "20x interval coverage (target 0.60, 6 fields): features " in out and "pixels nuclei " in out


def test_calibration_file_records_what_it_was_made_for(calibrated, tiny_models):
    from vstain.inference.bundle import load_model
    from vstain.uncertainty.calibration import NAN_POLICY, Calibration

    cal = Calibration.load(calibrated["cal"])
    assert cal.alpha == 0.4 and cal.magnification == "20x" and cal.tta == 8
    assert cal.margin == DEFAULT_MARGIN  # what calibrate's predictor used; the intervals will use the same
    assert len(cal.fields) == 6 and set(cal.features) == set(FEATURE_COLUMNS) and set(cal.pixels) == set(TARGETS)
    for target in TARGETS:
        assert cal.bundles[target] == load_model(tiny_models / f"{target}.safetensors").content_hash()
        assert cal.pixels[target].multiplier > 0 and cal.pixels[target].floor >= 1.0
    assert cal.nan_policy == NAN_POLICY
    assert json.loads(calibrated["cal"].read_text())["format"] == "vstain-calibration"


def test_pixel_maps_bracket_the_prediction(calibrated):
    pred = calibrated["pred"]
    names = sorted(p.name for p in pred.glob("*.tif"))
    assert len(names) == 18  # 6 fields x 3 stains
    for name in names:
        centre = read_tiff(pred / name).astype(int)
        lower, upper = read_tiff(pred / "lower" / name).astype(int), read_tiff(pred / "upper" / name).astype(int)
        spread = read_tiff(pred / "uncertainty" / name)
        assert spread.shape == centre.shape
        assert np.all(lower <= centre) and np.all(centre <= upper)
        assert np.all(upper - lower >= 2)  # the floor (>= 1 count) times λ > 0 is never zero width


def test_intervals_csv_has_every_feature_of_every_field(calibrated):
    table = pd.read_csv(calibrated["pred"] / "intervals.csv", dtype={"well": str, "field": str})
    assert len(table) == 6 * len(FEATURE_COLUMNS)
    assert set(table["stain"]) == set(TARGETS)
    finite = table.dropna(subset=["lower", "upper"])
    assert len(finite) > 0
    assert (finite["lower"] <= finite["prediction"]).all() and (finite["prediction"] <= finite["upper"]).all()


def test_coverage_on_the_calibration_fields_meets_the_finite_sample_bound(calibrated):
    """On its own calibration fields, every feature interval holds on >= k of n fields, k = ⌈(n+1)(1−α)⌉,
    and the pixel risk is at most (α(n+1) − 1)/n: exact consequences of how q and λ are chosen."""
    coverage = json.loads((calibrated["eval"] / "coverage.json").read_text())["20x"]
    assert coverage["alpha"] == 0.4
    from vstain.uncertainty.calibration import Calibration

    cal = Calibration.load(calibrated["cal"])
    for name, entry in coverage["features"].items():
        n = cal.features[name].n
        if n == 6 and entry["fields"] == 6:
            assert entry["coverage"] >= math.ceil(7 * 0.6) / 6 - 1e-9, name
    for stain in TARGETS:
        assert coverage["stains"][stain]["pixel_coverage"] >= 1 - (0.4 * 7 - 1) / 6 - 1e-9
    report = (calibrated["eval"] / "report.html").read_text()
    assert "Interval coverage" in report and "target coverage 0.60" in report


def test_rerun_skips_done_fields_and_refuses_another_calibration(calibrated, small_plate, tiny_models, tmp_path,
                                                                 capsys):
    code, out, _ = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output",
                            calibrated["pred"], "--calibration", calibrated["cal"], "--no-progress"], capsys)
    assert code == 0 and "skipped 6 already done" in out
    other = tmp_path / "other.json"
    data = json.loads(calibrated["cal"].read_text())
    data["pixels"]["nuclei"]["multiplier"] *= 2
    other.write_text(json.dumps(data))
    code, _, err = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output",
                            calibrated["pred"], "--calibration", other, "--no-progress"], capsys)
    assert code == 2 and "made with another calibration" in one_line_error(err)


def test_predict_with_intervals_refuses_to_mix_with_other_outputs(calibrated, small_plate, tiny_models, tmp_path,
                                                                   capsys):
    plain = tmp_path / "plain"
    assert main(["predict", "--models", str(tiny_models), "--input", str(small_plate), "--output", str(plain),
                 "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in plain.glob("*.tif")}
    code, _, err = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output", plain,
                            "--calibration", calibrated["cal"], "--no-progress"], capsys)
    assert code == 2 and "was not written with this calibration" in one_line_error(err)
    assert {p.name: p.read_bytes() for p in plain.glob("*.tif")} == before  # nothing overwritten


def test_a_field_killed_before_its_interval_file_is_recomputed(calibrated, small_plate, tiny_models, tmp_path,
                                                               capsys):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(calibrated["pred"], out)
    (out / "intervals" / "20x_B02_F001.json").unlink()  # killed after the TIFFs, before the interval file
    code, stdout, _ = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output", out,
                               "--calibration", calibrated["cal"], "--no-progress"], capsys)
    assert code == 0 and "predicted 1 fields" in stdout and "skipped 5 already done" in stdout
    assert (out / "intervals" / "20x_B02_F001.json").is_file()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--alpha", "0.2"], "made for alpha 0.4, not 0.2"),
    (["--workers", "2"], "does not take --workers"),
    (["--tta", "1"], "does not take --tta 1"),
])
def test_predict_refuses_mismatches_in_one_line(calibrated, small_plate, tiny_models, tmp_path, capsys, extra,
                                                expected):
    code, _, err = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output", tmp_path / "p",
                            "--calibration", calibrated["cal"], "--no-progress", *extra], capsys)
    assert code == 2 and expected in one_line_error(err)
    assert not (tmp_path / "p" / "intervals.csv").exists()


def test_predict_refuses_other_models(calibrated, small_plate, tmp_path, capsys, make_bundles):
    others = make_bundles(tmp_path / "others", seed=10)
    code, _, err = run_cli(["predict", "--models", others, "--input", small_plate, "--output", tmp_path / "p",
                            "--calibration", calibrated["cal"], "--no-progress"], capsys)
    assert code == 2 and "made for another nuclei model" in one_line_error(err)


def test_predict_refuses_a_calibration_of_another_magnification(calibrated, small_plate, tiny_models, tmp_path,
                                                                capsys):
    data = json.loads(calibrated["cal"].read_text())
    data["magnification"] = "40x"
    other = tmp_path / "cal40.json"
    other.write_text(json.dumps(data))
    code, _, err = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output", tmp_path / "p",
                            "--calibration", other, "--no-progress"], capsys)
    assert code == 2 and "made for 40x models; --models holds 20x models" in one_line_error(err)


def test_check_matches_names_what_differs(calibrated):
    from vstain.uncertainty.calibration import Calibration, CalibrationError

    cal = Calibration.load(calibrated["cal"])
    cal.check_matches(cal.bundles, magnification="20x", alpha=0.4)  # its own: fine
    with pytest.raises(CalibrationError, match="made for 20x fields, not 60x"):
        cal.check_matches(cal.bundles, magnification="60x")
    with pytest.raises(CalibrationError, match="has no calibration for lipids"):
        Calibration(**{**cal.model_dump(), "bundles": {"nuclei": cal.bundles["nuclei"]}}).check_matches(
            {"lipids": "0" * 64}, magnification="20x")


def test_too_few_calibration_fields_for_alpha(small_plate, tiny_models, tmp_path, capsys):
    code, _, err = run_cli(["calibrate", "--models", tiny_models, "--input", small_plate, "--out",
                            tmp_path / "c.json", "--no-progress"], capsys)  # α 0.1 needs 9, the plate has 6
    line = one_line_error(err)
    assert code == 2 and "6 calibration fields cannot give 90% intervals" in line and "at least 9" in line
    assert not (tmp_path / "c.json").exists()


def test_calibration_fields_seen_in_training_are_refused(small_plate, tmp_path, capsys, make_bundles):
    from vstain.plate.index import field_identity, index_plate

    first = index_plate(small_plate, magnification="20x").fields[0]
    trained = make_bundles(tmp_path / "trained", training_fields={"train": [field_identity(first)],
                                                                      "validation": []})
    code, _, err = run_cli(["calibrate", "--models", trained, "--input", small_plate, "--alpha", "0.4",
                            "--out", tmp_path / "c.json", "--no-progress"], capsys)
    line = one_line_error(err)
    assert code == 2 and first.label in line and "train split" in line and "never saw" in line


def test_split_without_calibration_fields(small_plate, tiny_models, tmp_path, capsys):
    from vstain.plate.index import index_plate
    from vstain.plate.splits import Split

    keys = [f.key for f in index_plate(small_plate, magnification="20x").fields]
    split = Split({k: ("train" if i else "validation") for i, k in enumerate(keys)}).save(tmp_path / "split.csv")
    code, _, err = run_cli(["calibrate", "--models", tiny_models, "--input", small_plate, "--split", split,
                            "--alpha", "0.4", "--out", tmp_path / "c.json", "--no-progress"], capsys)
    assert code == 2 and "no calibration field at 20x" in one_line_error(err)


def test_calibration_file_problems_are_one_line(tmp_path, calibrated):
    from vstain.uncertainty.calibration import Calibration, CalibrationError

    with pytest.raises(CalibrationError, match="no such calibration file"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="not a readable calibration.json"):
        Calibration.load(tmp_path / "junk.json")
    data = json.loads(calibrated["cal"].read_text())
    data["colour"] = "red"
    (tmp_path / "extra.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=r"extra.json: colour: unknown key"):
        Calibration.load(tmp_path / "extra.json")
    data.pop("colour")
    data["alpha"] = "lots"
    (tmp_path / "typed.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="alpha"):
        Calibration.load(tmp_path / "typed.json")


# ---------------------------------------------------------------- library level, with a fast fake measurement
class FakeMeasure:
    """Features from image means (fast, deterministic); counts calls; NaN where told."""

    def __init__(self, nan_on_truth_of=None):
        self.calls = 0
        self.nan_on_truth_of = nan_on_truth_of

    def __call__(self, nuclei, lipids, cytoplasm, *, magnification, threads=None):
        self.calls += 1
        base = np.array([float(nuclei.mean()), float(lipids.mean()), float(cytoplasm.mean())])
        values = {name: float(base[i % 3] * (1 + i / 50)) for i, name in enumerate(FEATURE_COLUMNS)}
        values["StDev_nuclei_no_edge_AreaShape_Area"] = math.nan  # never measurable: no interval
        if self.nan_on_truth_of is not None and abs(base[0] - self.nan_on_truth_of) < 1e-9:
            values["Count_nuclei"] = math.nan

        class Result:
            features = values
            warnings: list = []
        return Result()


def test_calibration_resumes_and_reuses_its_parts_for_another_alpha(small_plate, tiny_models, tmp_path):
    from vstain.uncertainty.calibrate import calibrate

    measure = FakeMeasure()
    calibrate([tiny_models], small_plate, tmp_path / "c.json", alpha=0.4, measure=measure, progress=False)
    assert measure.calls == 6 * (1 + 8 + 1)  # TTA mean, eight variants and the truth per field
    again = FakeMeasure()
    cal = calibrate([tiny_models], small_plate, tmp_path / "c.json", alpha=0.5, measure=again, progress=False)
    assert again.calls == 0 and cal.alpha == 0.5
    assert len(list((tmp_path / "c.json.parts").glob("*.npz"))) == 6
    from vstain.uncertainty.calibrate import read_parts
    from vstain.uncertainty.calibration import CalibrationError

    parts = read_parts(tmp_path / "c.json.parts", cal.fields)
    assert [p.identity for p in parts] == cal.fields and parts[0].predicted.shape == (len(FEATURE_COLUMNS),)
    next((tmp_path / "c.json.parts").glob("*.npz")).unlink()
    with pytest.raises(CalibrationError, match="no readable part for"):
        read_parts(tmp_path / "c.json.parts", cal.fields)


def test_nan_policy_is_applied_and_recorded(small_plate, tiny_models, tmp_path):
    from vstain.plate.index import index_plate
    from vstain.uncertainty.calibrate import calibrate

    first = index_plate(small_plate, magnification="20x").fields[0]
    nuclei_mean = float(first.read_target("nuclei").mean())
    cal = calibrate([tiny_models], small_plate, tmp_path / "c.json", alpha=0.4, progress=False,
                    measure=FakeMeasure(nan_on_truth_of=nuclei_mean))
    count = cal.features["Count_nuclei"]
    assert count.n == 5 and count.quantile is not None and len(count.skipped_fields) == 1
    never = cal.features["StDev_nuclei_no_edge_AreaShape_Area"]
    assert never.quantile is None and never.n == 0 and "needs 2" in never.reason
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["features"]["StDev_nuclei_no_edge_AreaShape_Area"]["quantile"] is None
    assert "nonfinite_truth" in written["nan_policy"]


def test_predict_variants_average_to_the_tta_prediction(small_plate, tiny_models):
    from vstain.inference.predictor import Predictor
    from vstain.plate.index import index_plate

    field = index_plate(small_plate, magnification="20x").fields[0]
    predictor = Predictor([tiny_models], tta=8, uncertainty=True)
    variants = predictor.predict_variants(field.read_brightfield())
    images, spreads = predictor.predict_field(field.read_brightfield(), return_uncertainty=True)
    for target in TARGETS:
        assert variants[target].shape == (8, *field.shape)
        mean = np.clip(np.rint(variants[target].mean(axis=0)), 0, 65535)
        assert np.abs(mean - images[target].astype(float)).max() <= 1  # float order only
        assert np.abs(variants[target].std(axis=0) - spreads[target]).max() <= 1


def test_intervals_predict_with_the_calibrations_margin(calibrated, small_plate, tiny_models, tmp_path, capsys):
    from vstain.inference.predictor import Predictor
    from vstain.plate.index import index_plate

    field = index_plate(small_plate, magnification="20x").fields[0]
    name = field.target_filename("nuclei")
    made = read_tiff(calibrated["pred"] / name)
    with_margin = Predictor([tiny_models], tta=8).predict_field(field.read_brightfield())["nuclei"]
    np.testing.assert_array_equal(made, with_margin)
    # a calibration.json from before the margin was recorded was made without one: so are its intervals
    old = tmp_path / "old.json"
    data = json.loads(calibrated["cal"].read_text())
    del data["margin"]
    old.write_text(json.dumps(data))
    out = tmp_path / "pred_old"
    code, _, _ = run_cli(["predict", "--models", tiny_models, "--input", small_plate, "--output", out,
                          "--calibration", old, "--no-progress"], capsys)
    assert code == 0
    bare = Predictor([tiny_models], tta=8, margin=0).predict_field(field.read_brightfield())["nuclei"]
    np.testing.assert_array_equal(read_tiff(out / name), bare)
    assert not np.array_equal(bare, with_margin)
