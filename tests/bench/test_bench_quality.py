"""`vstain bench quality`: the machinery end to end on a tiny variant, and the target checks by hand."""

from __future__ import annotations

import csv
import json

import pytest

from vstain.bench.quality import VARIANTS, check_targets, quality_csv, quality_markdown
from vstain.cli import main
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
    assert "| a | 0.300 | 0.100 | 0.200 | 0.800 | 0.367 | 0.150 | 0.300 | 3 % | 4 % |" in quality_markdown(
        {"variants": [good], "targets": targets})
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
    assert set(points) == {"noise_free", "reacquired"}
    assert points["noise_free"]["pixelwise"] < result["methods"]["model"]["pixelwise"]
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

    def fake_run(out, *, variants, budget, seed, log, alignment):  # records what the CLI asked for
        chosen.update(variants=variants, budget=budget, alignment=alignment)
        raise quality.ConfigError("stop here")

    monkeypatch.setattr(quality, "run_quality_benchmark", fake_run)
    assert main(["bench", "quality", "--full-size", "--variants", "random-20x", "--out", str(tmp_path)]) == 2
    assert chosen == {"variants": ["random-20x"], "budget": "full", "alignment": "none"}


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
