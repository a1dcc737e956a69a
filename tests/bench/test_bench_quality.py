"""`vstain bench quality`: the machinery end to end on a tiny variant, and the target checks by hand."""

from __future__ import annotations

import csv
import json

import pytest

from vstain.bench.quality import VARIANTS, _pixel, check_targets, quality_csv, quality_markdown, variant_named
from vstain.cli import main
from vstain.errors import ConfigError
from vstain.vocabulary import MAGNIFICATIONS, TARGETS


def test_variants_cover_every_magnification_and_hold_some_back():
    assert len(VARIANTS) >= 6
    assert {v.magnification for v in VARIANTS} == set(MAGNIFICATIONS)
    held_back = [v for v in VARIANTS if not v.tuned]
    assert {v.magnification for v in held_back} == set(MAGNIFICATIONS)
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)
    assert all((v.preset is None) != (v.randomize is None) for v in VARIANTS)


def _result(name, *, model, linear, mean, counts, iou):
    def entry(score, pixels):
        return {"score": score, "pixelwise": sum(pixels) / 3, "featurewise": 2 * score - sum(pixels) / 3,
                "pixelwise_per_channel": dict(zip(("C01 nuclei", "C02 lipids", "C03 cytoplasm"), pixels))}

    return {"variant": {"name": name, "magnification": "20x", "tuned": False},
            "methods": {"model": entry(*model), "linear": entry(*linear), "mean_image": entry(*mean)},
            "nuclei_counts": [{"field": "B04 F001", "truth": t, "predicted": p} for t, p in counts],
            "validation": {"nuclei": {"iou": iou}}}


def test_targets_by_hand():
    good = _result("a", model=(0.3, (0.2, 0.3, 0.2)), linear=(0.8, (0.6, 0.9, 0.4)), mean=(1.0, (0.8, 1.0, 0.5)),
                   counts=[(100, 90), (50, 59)], iou=0.6)
    bad = _result("b", model=(0.5, (0.2, 0.95, 0.2)), linear=(0.8, (0.6, 0.9, 0.4)), mean=(1.0, (0.8, 1.0, 0.5)),
                  counts=[(100, 75), (40, None)], iou=0.4)
    targets = check_targets([good, bad])
    assert targets["a"] == {"score_over_linear": pytest.approx(0.375), "score_target_met": True,
                            "stains_beat_both_baselines": {"nuclei": True, "lipids": True, "cytoplasm": True},
                            "max_nuclei_count_error": pytest.approx(0.18), "nuclei_count_target_met": True,
                            "well_nuclei_count_error": pytest.approx(1 / 150),  # 149 found for 150
                            "iou": 0.6, "iou_target_met": True}
    b = targets["b"]
    assert b["score_over_linear"] == pytest.approx(0.625) and not b["score_target_met"]
    assert b["stains_beat_both_baselines"] == {"nuclei": True, "lipids": False, "cytoplasm": True}
    assert b["max_nuclei_count_error"] == 1.0 and not b["nuclei_count_target_met"]  # no nuclei found = 100 % off
    assert b["well_nuclei_count_error"] == pytest.approx(65 / 140)  # 75 + 0 found for 100 + 40
    assert not b["iou_target_met"]
    at_bar = _result("c", model=(0.3, (0.2, 0.3, 0.2)), linear=(0.8, (0.6, 0.9, 0.4)), mean=(1.0, (0.8, 1.0, 0.5)),
                     counts=[(100, 90)], iou=0.5)
    assert not check_targets([at_bar])["c"]["iou_target_met"]  # "above 0.5": the run summary warns here too
    rows = list(csv.DictReader(quality_csv([good]).splitlines()))
    assert len(rows) == 3 * (3 + 3)  # 3 methods x (score, pixelwise, featurewise + 3 stains)
    table = quality_markdown({"variants": [good], "targets": targets})
    assert "| a | no (held back) | 0.300 | 0.800 | 1.000 | 0.37 |" in table
    assert "| 18 % | 1 % | 0.60 |" in table  # per field at most, test well total, IoU
    assert "Test-time augmentation" not in table  # no run recorded a choice
    good["validation"] = {"nuclei": {"iou": 0.6, "tta": 8}, "lipids": {"tta": 1}}
    assert "| a | 8 | 1 | n/a |" in quality_markdown({"variants": [good], "targets": targets})
    # Reference points: their own table and rows, never part of the targets.
    good["reference_points"] = {
        "noise_free": {"score": 0.1, "pixelwise": 0.05, "featurewise": 0.15,
                       "nuclei_counts": [{"field": "B04 F001", "truth": 100, "predicted": 97}]},
        "reacquired": {"score": 0.2, "pixelwise": 0.1, "featurewise": 0.3,
                       "nuclei_counts": [{"field": "B04 F001", "truth": 100, "predicted": 104}]}}
    assert check_targets([good]) == {"a": targets["a"]}
    rows = list(csv.DictReader(quality_csv([good]).splitlines()))
    assert len(rows) == 3 * (3 + 3) + 2 * 3
    assert [r["value"] for r in rows if r["method"] == "reacquired"] == ["0.2", "0.1", "0.3"]
    assert "| a | 0.300 | 0.100 | 0.200 | 0.800 | 0.367 | 0.150 | 0.300 | 3 % | 4 % | n/a | 0.200 | n/a | n/a | " \
        "0.400 |" in quality_markdown({"variants": [good], "targets": targets})  # a trial without median loading
    good["reference_points"]["noise_free"]["pixelwise_per_channel"] = {"C01 nuclei": 0.04, "C02 lipids": 0.05,
                                                                       "C03 cytoplasm": 0.06}
    good["reference_points"]["median_loading"] = {
        "score": 0.15, "pixelwise": 0.09, "featurewise": 0.21,
        "pixelwise_per_channel": {"C01 nuclei": 0.04, "C02 lipids": 0.05, "C03 cytoplasm": 0.18},
        "nuclei_counts": [{"field": "B04 F001", "truth": 100, "predicted": 97}]}
    assert "| 3 % | 4 % | 0.150 | 0.200 | 0.060 | 0.180 | 0.400 |" in quality_markdown(
        {"variants": [good], "targets": targets})
    assert check_targets([good]) == {"a": targets["a"]}  # never part of the targets
    # A model whose featurewise error rests on a few features gets them named under the tables; a trial
    # written before the key existed, or without such features, gets no line.
    assert "rests on a few features" not in quality_markdown({"variants": [good], "targets": targets})
    good["methods"]["model"]["featurewise_rests_on"] = [
        {"feature": "StDev_cells_no_edge_AreaShape_Compactness", "relative_mae": 53.72, "target_median": 0.0116},
        {"feature": "Count_Lipids_no_edge", "relative_mae": 12.0, "target_median": None}]
    table = quality_markdown({"variants": [good], "targets": targets})
    assert "- a: `StDev_cells_no_edge_AreaShape_Compactness` 53.7 (0.0116), `Count_Lipids_no_edge` 12.0 (n/a)" in table


@pytest.mark.slow
def test_smoke_benchmark_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "bq"
    assert main(["bench", "quality", "--smoke", "--variants", "reference-20x", "--out", str(out)]) == 0
    summary = json.loads((out / "quality.json").read_text())
    (result,) = summary["variants"]
    assert set(result["methods"]) == {"model", "linear", "mean_image"}
    assert result["variant"]["name"] == "reference-20x" and result["test_fields"]
    assert all(c["truth"] for c in result["nuclei_counts"])  # the true C01 has nuclei the pipeline finds
    assert set(summary["targets"]["reference-20x"]) >= {"score_over_linear", "nuclei_count_target_met"}
    for name in ("quality.md", "quality.csv", "quality.png"):
        assert (out / name).stat().st_size > 0
    assert result["alignment"] == "none"  # the recipe as shipped, predictions in the brightfield frame
    predicted = json.loads((out / "reference-20x" / "predictions" / "model" / "predictions.json").read_text())
    assert predicted["settings"]["frame"] == "brightfield"
    # each model chose its test-time augmentation on the validation fields, and was predicted with it
    chosen = {stain: result["validation"][stain]["tta"] for stain in TARGETS}
    assert set(chosen.values()) <= {1, 8}
    assert all(set(result["validation"][stain]["tta_errors"]) == {"1", "8"} for stain in TARGETS)
    used = predicted["settings"]["tta"]
    assert (used if isinstance(used, dict) else {"20x": dict.fromkeys(TARGETS, used)}) == {"20x": chosen}
    split = (out / "reference-20x" / "split.csv").read_text()
    assert "test" in split and "validation" in split and "train" in split
    assert "reference-20x |" in capsys.readouterr().out
    # The reference points: the recorded stains' own noise is far below an untrained model's error.
    points = result["reference_points"]
    assert set(points) == {"noise_free", "reacquired", "median_loading"}
    assert points["noise_free"]["pixelwise"] < result["methods"]["model"]["pixelwise"]
    # median loading: the noise-free nuclei and lipids, a cytoplasm with each cell's own uptake taken away
    for stain in ("nuclei", "lipids"):
        assert _pixel(points["median_loading"], stain) == _pixel(points["noise_free"], stain)
    assert _pixel(points["median_loading"], "cytoplasm") > _pixel(points["noise_free"], "cytoplasm")
    assert 0 < points["reacquired"]["pixelwise"] < result["methods"]["mean_image"]["pixelwise"]
    assert [c["field"] for c in points["reacquired"]["nuclei_counts"]] == [c["field"] for c in result["nuclei_counts"]]
    assert "second exposure" in (out / "quality.md").read_text()
    # A rerun reuses the finished variant instead of training again; a trial from before the
    # reference points gets them added, and nothing else is redone.
    trained = (out / "reference-20x" / "runs" / "nuclei" / "model.safetensors").stat().st_mtime_ns
    assert main(["bench", "quality", "--smoke", "--variants", "reference-20x", "--out", str(out)]) == 0
    assert "already done" in capsys.readouterr().out
    trial = out / "reference-20x" / "trial.json"
    old = json.loads(trial.read_text())
    del old["reference_points"]
    trial.write_text(json.dumps(old))
    assert main(["bench", "quality", "--smoke", "--variants", "reference-20x", "--out", str(out)]) == 0
    assert json.loads(trial.read_text())["reference_points"] == points
    # ... and one from before the median loading gets that one alone.
    old = json.loads(trial.read_text())
    del old["reference_points"]["median_loading"]
    old["reference_points"]["noise_free"]["score"] = -1.0  # kept as it was, not recomputed
    trial.write_text(json.dumps(old))
    assert main(["bench", "quality", "--smoke", "--variants", "reference-20x", "--out", str(out)]) == 0
    again = json.loads(trial.read_text())["reference_points"]
    assert again["median_loading"] == points["median_loading"] and again["noise_free"]["score"] == -1.0
    # The trial records the budget it was trained with; another budget never reuses it silently
    # (refused before anything is trained), nor does a trial from before the budget was recorded.
    assert result["budget"]["size"] == [384, 384]
    assert result["budget"]["step_overrides"]["nuclei"][0] == "trainer.max_epochs=1"
    capsys.readouterr()
    assert main(["bench", "quality", "--variants", "reference-20x", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "reference-20x" in err and "another budget (384x384 fields" in err and "not this run's (1024x1024" in err
    assert trained == (out / "reference-20x" / "runs" / "nuclei" / "model.safetensors").stat().st_mtime_ns
    old = json.loads(trial.read_text())
    del old["budget"]
    trial.write_text(json.dumps(old))
    assert main(["bench", "quality", "--smoke", "--variants", "reference-20x", "--out", str(out)]) == 2
    assert "not recorded" in capsys.readouterr().err
    assert (out / "reference-20x" / "runs" / "nuclei" / "model.safetensors").stat().st_mtime_ns == trained


def test_quality_runs_alone_and_names_unknown_variants(tmp_path, capsys):
    assert main(["bench", "quality", "training", "--out", str(tmp_path)]) == 2
    assert "runs alone" in capsys.readouterr().err
    assert main(["bench", "quality", "--variants", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "reference-20x" in err


def test_full_size_budget_is_the_shipped_recipe_on_real_fields(tmp_path, monkeypatch):
    import vstain.bench.quality as quality

    assert quality.BUDGETS["full"].size is None and quality.BUDGETS["full"].step_overrides == {}
    chosen = {}

    def fake_run(out, *, variants, budget, seed, log, alignment, stains, changes):  # what the CLI asked for
        chosen.update(variants=variants, budget=budget, alignment=alignment, stains=stains, changes=changes)
        raise quality.ConfigError("stop here")

    monkeypatch.setattr(quality, "run_quality_benchmark", fake_run)
    assert main(["bench", "quality", "--full-size", "--variants", "random-20x", "--out", str(tmp_path)]) == 2
    assert chosen == {"variants": ["random-20x"], "budget": "full", "alignment": "none", "stains": None,
                      "changes": {}}
    # --as-shipped: the bench's plates with every stain at its recipe's own length
    assert quality.BUDGETS["shipped"].size == quality.BUDGETS["bench"].size
    assert quality.BUDGETS["shipped"].step_overrides == {}
    assert main(["bench", "quality", "--as-shipped", "--stains", "cytoplasm", "lipids", "--out", str(tmp_path)]) == 2
    assert chosen["budget"] == "shipped" and chosen["stains"] == ["cytoplasm", "lipids"]
    assert main(["bench", "quality", "--set", "cytoplasm:data.crop_size=512", "--set", "nuclei:trainer.max_epochs=2",
                 "--set", "cytoplasm:model.args.downsample=4", "--out", str(tmp_path)]) == 2
    assert chosen["changes"] == {"nuclei": ("trainer.max_epochs=2",),
                                 "cytoplasm": ("data.crop_size=512", "model.args.downsample=4")}


@pytest.mark.slow
def test_alignment_auto_trains_on_offsets_scores_in_the_stains_frame_and_refuses_mixing(tmp_path, capsys):
    out = tmp_path / "bq"
    # random-20x draws a stain-to-brightfield shift, as on the instrument
    args = ["bench", "quality", "--smoke", "--variants", "random-20x", "--out", str(out)]
    assert main([*args, "--alignment", "auto"]) == 0
    summary = json.loads((out / "quality.json").read_text())
    assert summary["alignment"] == "auto" and summary["variants"][0]["alignment"] == "auto"
    for stain in TARGETS:  # every run estimated offsets on its training fields and kept them
        offsets = (out / "random-20x" / "runs" / stain / "offsets.csv").read_text()
        assert "dy_px" in offsets
    # ... and the models were scored in the stains' own frame, where the recorded stains are.
    predicted = json.loads((out / "random-20x" / "predictions" / "model" / "predictions.json").read_text())
    assert predicted["settings"]["frame"] == "fluorescence"
    assert "data.alignment: auto" in (out / "quality.md").read_text()
    capsys.readouterr()
    # The folder's models were trained with auto: a rerun with none must not reuse them silently.
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "random-20x" in err and "alignment auto" in err


def test_alignment_is_a_quality_option(capsys):
    assert main(["bench", "training", "--alignment", "auto"]) == 2
    assert "--alignment is for `vstain bench quality`" in capsys.readouterr().err


def test_bench_budget_trains_the_nuclei_as_shipped_and_shortens_only_lipids_and_cytoplasm():
    # At half the recipe's nuclei epochs the 40x nuclei were still learning (docs/quality.md, "The
    # nuclei at the recipe's own length"): the benchmark measures the shipped nuclei recipe.
    import vstain.bench.quality as quality

    overrides = quality.BUDGETS["bench"].step_overrides
    assert "nuclei" not in overrides
    assert overrides["lipids"] == overrides["cytoplasm"] == ("trainer.max_epochs=3",)


def test_fresh_plates_are_named_by_their_recipe():
    assert variant_named("random-40x") is next(v for v in VARIANTS if v.name == "random-40x")
    drawn = variant_named("random-2321-20x")
    assert (drawn.magnification, drawn.randomize, drawn.preset, drawn.tuned) == ("20x", 2321, None, False)
    preset = variant_named("rim-droplets-60x")
    assert (preset.magnification, preset.preset, preset.randomize, preset.tuned) == ("60x", "rim-droplets", None, False)
    for wrong in ("random-12-30x", "nope-20x", "random-x-20x", "rim-droplets", "random-20x-2321"):
        with pytest.raises(ConfigError, match="random-<seed>-"):
            variant_named(wrong)


def test_targets_of_a_trial_that_trained_some_stains():
    # Trained the cytoplasm alone: the nuclei and lipids are the truth in every folder (pixel error 0).
    result = _result("c", model=(0.1, (0.0, 0.0, 0.2)), linear=(0.3, (0.0, 0.0, 0.4)), mean=(0.4, (0.0, 0.0, 0.5)),
                     counts=[(100, 100)], iou=None)
    result["stains"] = ["cytoplasm"]
    result["validation"] = {}
    target = check_targets([result])["c"]
    assert target["stains_beat_both_baselines"] == {"cytoplasm": True}  # not "nuclei: False" for 0 against 0
    assert target["score_over_linear"] == pytest.approx(1 / 3) and target["score_target_met"]
    assert target["nuclei_count_target_met"] is None and target["iou_target_met"] is None  # not judged
    assert target["max_nuclei_count_error"] is None and target["well_nuclei_count_error"] is None
    rows = list(csv.DictReader(quality_csv([result]).splitlines()))
    assert {r["stain"] for r in rows} == {"all", "cytoplasm"} and len(rows) == 3 * (3 + 1)
    table = quality_markdown({"variants": [result], "targets": {"c": target}})
    assert "| c | no (held back) | 0.100 | 0.300 | 0.400 | 0.33 | truth | truth | truth | truth | 0.200 | 0.400 |" \
        in table
    assert "Trained cytoplasm only" in table
    # trained lipids alone: the reference table's cytoplasm columns are the truth, not a pixel error of 0
    result["stains"] = ["lipids"]
    result["reference_points"] = {kind: {"score": 0.1, "pixelwise": 0.0, "featurewise": 0.1,
                                         "pixelwise_per_channel": {"C01 nuclei": 0.0, "C02 lipids": 0.0,
                                                                   "C03 cytoplasm": 0.0},
                                         "nuclei_counts": [{"field": "B04 F001", "truth": 100, "predicted": 100}]}
                                  for kind in ("noise_free", "reacquired", "median_loading")}
    table = quality_markdown({"variants": [result], "targets": check_targets([result])})
    assert "| 0 % | 0 % | 0.100 | truth | truth | truth | truth |" in table
    # A trial without the record trained all three, as before the option existed.
    del result["stains"]
    assert set(check_targets([result])["c"]["stains_beat_both_baselines"]) == set(TARGETS)
    assert "only" not in quality_markdown({"variants": [result], "targets": check_targets([result])})


@pytest.mark.slow
def test_one_stain_beside_the_true_others_end_to_end(tmp_path, capsys):
    from vstain.plate.naming import parse_name

    out = tmp_path / "bq"
    args = ["bench", "quality", "--smoke", "--variants", "random-7-40x", "--out", str(out)]
    assert main([*args, "--stains", "cytoplasm"]) == 0
    trial = out / "random-7-40x"
    assert sorted(p.name for p in (trial / "runs").iterdir()) == ["cytoplasm"]  # nothing else trained
    summary = json.loads((out / "quality.json").read_text())
    (result,) = summary["variants"]
    assert summary["stains"] == result["stains"] == ["cytoplasm"]
    assert result["variant"] == {"name": "random-7-40x", "magnification": "40x", "preset": None, "randomize": 7,
                                 "tuned": False}
    truth = {p.name: p.read_bytes() for p in (trial / "heldout" / "40x_images").iterdir()
             if parse_name(p.name).channel in (1, 2, 3)}
    assert len(truth) == 3 * len(result["test_fields"])
    folders = [trial / "predictions" / m for m in ("model", "linear", "mean_image")]
    folders += [trial / "reference" / k / "40x_images" for k in ("noise_free", "reacquired", "median_loading")]
    for folder in folders:
        for name, data in truth.items():
            channel = parse_name(name).channel
            if channel == 3:  # the stain trained: a prediction (or a second rendering), not the truth
                assert (folder / name).read_bytes() != data, folder
            else:
                assert (folder / name).read_bytes() == data, folder
    for kind in ("model", "linear", "mean_image"):
        per_channel = {k.split()[0]: v for k, v in result["methods"][kind]["pixelwise_per_channel"].items()}
        assert per_channel["C01"] == per_channel["C02"] == 0.0 and per_channel["C03"] > 0
    # the truth itself was never written to (the plate's files are what the heldout folder links)
    plate_files = {p.name: p.read_bytes() for p in (trial / "plate" / "40x_images").iterdir() if p.name in truth}
    assert plate_files == truth
    assert summary["targets"]["random-7-40x"]["nuclei_count_target_met"] is None
    assert "Trained cytoplasm only" in (out / "quality.md").read_text()
    capsys.readouterr()
    # The same folder with other stains is refused before anything is trained; the same stains reuse it.
    assert main([*args, "--stains", "nuclei", "cytoplasm"]) == 2
    err = capsys.readouterr().err
    assert "random-7-40x" in err and "trained cytoplasm, not nuclei, cytoplasm" in err
    assert main(args) == 2  # all three (the default) is other stains too
    assert main([*args, "--stains", "cytoplasm"]) == 0
    assert "already done" in capsys.readouterr().out


def test_stains_are_a_quality_option(capsys):
    assert main(["bench", "training", "--stains", "nuclei"]) == 2
    assert "--stains, --as-shipped and --set are for `vstain bench quality`" in capsys.readouterr().err
    assert main(["bench", "training", "--set", "cytoplasm:data.crop_size=512"]) == 2
    assert "--set are for `vstain bench quality`" in capsys.readouterr().err


def test_recipe_changes_are_read_as_stain_key_value():
    from vstain.bench.quality import parse_changes

    assert parse_changes([]) == {}
    assert parse_changes(["cytoplasm:data.crop_size=512", "lipids:trainer.max_epochs=3",
                          "cytoplasm:model.args.downsample=4"]) == {
        "lipids": ("trainer.max_epochs=3",), "cytoplasm": ("data.crop_size=512", "model.args.downsample=4")}
    # a value may hold ':' and '=' (only the first ':' and '=' split)
    assert parse_changes(["nuclei:data.split=a:b=c.csv"]) == {"nuclei": ("data.split=a:b=c.csv",)}
    for bad, says in (("data.crop_size=512", "expected STAIN:KEY=VALUE"), ("cytoplasm:data.crop_size", "expected"),
                      ("cytoplasm:=3", "expected"), ("cells:data.crop_size=512", "unknown stain 'cells'")):
        with pytest.raises(ConfigError, match=says):
            parse_changes([bad])


@pytest.mark.parametrize(("change", "says"), [
    ("cytoplasm:data.crop_sise=512", "data.crop_sise: unknown key"),
    ("cytoplasm:model.args.downsampel=4", "unknown argument 'downsampel'"),
    ("cytoplasm:trainer.max_epochs=many", "trainer.max_epochs"),
    ("nuclei:trainer.max_epochs=2", "nuclei, which this run does not train"),
    ("cytoplasm:seed=3", "seed is set in every step from the recipe's own"),
    ("cytoplasm:data.alignment=auto", "data.alignment is set by the benchmark (--alignment)"),
    ("cytoplasm:data.root=elsewhere", "data.root is set in every step"),
])
def test_recipe_changes_are_refused_before_anything_runs(tmp_path, capsys, change, says):
    out = tmp_path / "bq"
    args = ["bench", "quality", "--smoke", "--variants", "random-7-40x", "--stains", "cytoplasm", "--out", str(out)]
    assert main([*args, "--set", change]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # no plate drawn, nothing trained


def test_a_recipe_change_reaches_the_training_and_is_recorded_end_to_end(tmp_path, capsys):
    import yaml

    out = tmp_path / "bq"
    args = ["bench", "quality", "--smoke", "--variants", "random-7-40x", "--stains", "cytoplasm", "--out", str(out)]
    change = ["--set", "cytoplasm:data.crop_size=64", "--set", "cytoplasm:model.args.init_filters=8"]
    assert main([*args, *change]) == 0
    trial = out / "random-7-40x"
    resolved = yaml.safe_load((trial / "runs" / "cytoplasm" / "config.resolved.yaml").read_text())
    # the smoke budget's own crop of 96 is overridden by the change, which comes after it
    assert resolved["data"]["crop_size"] == 64 and resolved["model"]["args"]["init_filters"] == 8
    result = json.loads((trial / "trial.json").read_text())
    assert result["budget"]["step_overrides"]["cytoplasm"][-2:] == ["data.crop_size=64", "model.args.init_filters=8"]
    summary = json.loads((out / "quality.json").read_text())
    assert summary["changes"] == {"cytoplasm": ["data.crop_size=64", "model.args.init_filters=8"]}
    assert "Recipe changed (`--set`): cytoplasm `data.crop_size=64`, `model.args.init_filters=8`" in (
        out / "quality.md").read_text()
    capsys.readouterr()
    # The folder's model was trained with the change: without it (or with another) it is refused ...
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "random-7-40x" in err and "data.crop_size=64" in err and "--set" in err
    assert main([*args, "--set", "cytoplasm:data.crop_size=64"]) == 2
    # ... and with the same change reused.
    assert main([*args, *change]) == 0
    assert "already done" in capsys.readouterr().out
