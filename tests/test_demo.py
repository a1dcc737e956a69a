"""`vstain demo`: a reduced demo end to end, plus the pieces that need no training."""

import json
import warnings

import pytest

from vstain.cli import main
from vstain.demo import PROFILES, SUMMARY_NAME, format_summary, run_demo
from vstain.demo.summary import feature_group
from vstain.plate.splits import Split


def test_training_warnings_reach_the_user(tmp_path, monkeypatch):
    """The demo no longer silences every warning around training (fit() filters Lightning's advice itself)."""
    from vstain.training.recipes import cpu_recipe, train_recipe

    bundle = tmp_path / "model.safetensors"
    bundle.write_bytes(b"")
    split = tmp_path / "split.csv"
    split.write_text("magnification,well,field,subset\n")

    def fake_fit(config, run_dir):
        warnings.warn(f"something the user must see ({config.name})", UserWarning, stacklevel=1)
        return bundle

    monkeypatch.setattr("vstain.training.fit.fit", fake_fit)
    profile = PROFILES["test"]
    recipe = cpu_recipe("20x")
    with pytest.warns(UserWarning, match="something the user must see") as record:
        bundles = train_recipe(recipe, plate=tmp_path, split=split, runs_dir=tmp_path / "runs", magnification="20x",
                               seed=0, overrides=profile.common,
                               step_overrides={s.name: profile.overrides[s.name] for s in recipe})
    assert len(record) == 3 and set(bundles) == {"nuclei", "lipids", "cytoplasm"}


def test_feature_groups():
    assert feature_group("Count_nuclei_no_edge") == "counts"
    assert feature_group("Mean_nuclei_no_edge_AreaShape_Area") == "nuclei"
    assert feature_group("Mean_cells_no_edge_Intensity_MeanIntensity_Bodipy") == "cells"
    assert feature_group("Mean_Lipids_no_edge_AreaShape_Area") == "lipids"
    assert feature_group("Granularity_3_Bodipy") == "granularity"


def test_profiles_fit_the_feature_pipeline():
    for profile in PROFILES.values():
        assert min(profile.size) >= 384, profile.name  # CellProfiler-equivalent evaluation needs it
        assert profile.wells * profile.fields_per_well > profile.test_fields + profile.validation_fields


def test_refuses_to_overwrite_a_previous_demo(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / SUMMARY_NAME).write_text("{}")
    assert main(["demo", "--out", str(tmp_path / "out"), "--quick"]) == 2
    assert "already holds a demo" in capsys.readouterr().err
    assert (tmp_path / "out" / SUMMARY_NAME).read_text() == "{}"


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "vstain demo --out demo-out" in capsys.readouterr().out


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path, capsys):
    lines = []
    out = tmp_path / "demo"
    summary = run_demo(out, profile="test", seed=0, log=lines.append)

    written = json.loads((out / SUMMARY_NAME).read_text())
    assert written == summary
    assert {"model", "baselines", "timings", "paths"} <= set(written)
    assert set(written["baselines"]) == {"mean_image", "linear"}
    for entry in (written["model"], *written["baselines"].values()):
        assert {"score", "pixelwise", "featurewise", "pixelwise_per_channel"} <= set(entry)
        assert entry["n_fields"] == 1
        assert entry["score"] == pytest.approx((entry["pixelwise"] + entry["featurewise"]) / 2)
    # Eight steps of training say nothing about quality (make demo and vstain bench quality measure
    # it); the verdicts must agree with the scores they summarise.
    for name, baseline in written["baselines"].items():
        assert written["model_beats"][name] is (written["model"]["score"] < baseline["score"])

    report = (out / "report.html").read_text()
    assert "trained models against two baselines" in report and "mean_image" in report
    assert (out / "plate" / "plate.json").is_file()
    for bundle in written["paths"]["models"].values():
        assert bundle.endswith("model.safetensors") and (out / "runs").is_dir()
    # one split, in the vocabulary of docs/splits.md; every run read it and used no test field
    split = Split.load(out / "split.csv")
    assert sorted(split.assignments.values()) == ["test", "train", "train", "validation"]
    (test_key,) = split.keys("test")
    assert written["heldout_fields"] == [f"{test_key[0]} {test_key[1]} F{test_key[2]:03d}"]
    for run in ("nuclei", "lipids", "cytoplasm"):  # the CPU recipe: one model per stain
        assert Split.load(out / "runs" / run / "split.csv") == split
    assert report.index("trained models against two baselines") < report.index("<h2>Scores</h2>")
    # progress: a line per stage with the elapsed time, and one per training epoch
    assert all(line.startswith("[") and " s] " in line for line in lines)
    assert any("training cytoplasm" in line for line in lines)
    assert "[C1_20x_cpu] epoch 1/" in capsys.readouterr().out
    table = format_summary(written)
    assert "mean_image" in table and "linear" in table and "report:" in table


def test_method_summary_names_the_features_a_featurewise_error_rests_on():
    # demo-summary.json and the quality benchmark's trial.json carry them (docs/evaluation.md).
    from vstain.demo.summary import _method_summary
    from vstain.evaluation.metric import ChallengeScore, FeaturewiseResult, PixelwiseResult

    def score(errors):
        fw = FeaturewiseResult(per_feature=errors, target_median=dict.fromkeys(errors, 0.25), excluded_features={},
                               skipped_target_entries={}, prediction_counted_as_zero={}, matched_fields=["D02 F001"],
                               missing_predictions=[], extra_predictions=[])
        return ChallengeScore("20x", PixelwiseResult({"C01": 0.1}, {"C01": 1.0}, {"C01": 0.1}, {}, 1), fw)

    runaway = _method_summary(score({"a": 8.0, **dict.fromkeys("bcdefg", 0.5)}))
    assert runaway["featurewise_rests_on"] == [{"feature": "a", "relative_mae": 8.0, "target_median": 0.25},
                                               {"feature": "b", "relative_mae": 0.5, "target_median": 0.25},
                                               {"feature": "c", "relative_mae": 0.5, "target_median": 0.25}]
    assert _method_summary(score(dict.fromkeys("abcdefg", 0.5)))["featurewise_rests_on"] == []


def test_substitute_truth_puts_the_true_files_of_some_stains_in_place_of_predictions(tmp_path):
    from vstain.demo.trial import substitute_truth

    truth, folder = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    folder.mkdir()
    stem = "AssayPlate_Greiner_#655090_B04_T0001F001L01"
    names = {c: f"{stem}A0{c}Z01C0{c}.tif" for c in (1, 2, 3)}
    for channel, name in names.items():
        (truth / name).write_bytes(b"truth %d" % channel)
        (folder / name).write_bytes(b"predicted %d" % channel)
    (truth / "notes.txt").write_text("not an image")
    substitute_truth(truth, folder, ["nuclei", "cytoplasm"])
    assert (folder / names[1]).read_bytes() == b"truth 1"
    assert (folder / names[2]).read_bytes() == b"predicted 2"  # lipids: not named, untouched
    assert (folder / names[3]).read_bytes() == b"truth 3"
    assert not (folder / "notes.txt").exists()
    assert (truth / names[1]).read_bytes() == b"truth 1"  # the truth is linked, never written
    substitute_truth(truth, folder, [])
    assert (folder / names[2]).read_bytes() == b"predicted 2"
