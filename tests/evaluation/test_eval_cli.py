"""``vstain evaluate`` end to end: files written, fields matched, one-line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.measure import label

from vstain import cli
from vstain.bench.evaluation import synthetic_field
from vstain.evaluation import evaluate_folders
from vstain.evaluation.columns import FEATURE_COLUMNS, IMAGE_COLUMNS
from vstain.evaluation.report import ReportSection
from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff

PLATE = "AssayPlate_Greiner_#655090"


@dataclass
class FakeMeasurements:
    features: dict
    objects: dict
    labels: dict
    warnings: list = field(default_factory=list)


def fake_measure(nuclei, lipids, cytoplasm, *, magnification):
    """measure_field's contract, cheaply: every feature grows with the lipid image's mean."""
    nuclei_labels = label(nuclei > 1000)
    n = int(nuclei_labels.max())
    features = {name: float(lipids.mean()) * (i + 1) for i, name in enumerate(FEATURE_COLUMNS)}
    features["Count_Defective_lipid_droplets"] = 0.0
    features["Count_nuclei"] = float(n)
    objects = {"nuclei_no_edge": pd.DataFrame({"AreaShape_Area": np.bincount(nuclei_labels.ravel())[1:]},
                                              index=pd.RangeIndex(1, n + 1, name="ObjectNumber"))}
    return FakeMeasurements(features, objects, {"nuclei": nuclei_labels, "cells": nuclei_labels}, [])


@pytest.fixture()
def fake(monkeypatch):
    monkeypatch.setattr("vstain.evaluation.table.default_measure", lambda: fake_measure)


def write_triplet(folder: Path, well: str, fov: int, images: dict[str, np.ndarray]) -> None:
    for channel, image in images.items():
        c = int(channel[1:])
        write_tiff(folder / format_name(ImageName(plate=PLATE, well=well, field=fov, channel=c, action=c)), image)


def make_images(seed: int, shape=(64, 80)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(300, 700, shape, dtype=np.uint16) for c in ("C01", "C02", "C03")}
    images["C01"][10:20, 10:22] = 2000
    return images


def test_identical_prediction_scores_zero_and_writes_every_file(tmp_path, fake, capsys):
    truth, pred, out = tmp_path / "plate" / "20x_images", tmp_path / "pred", tmp_path / "eval"
    for fov in (1, 2):
        images = make_images(fov)
        write_triplet(truth, "D02", fov, images)
        write_triplet(pred, "D02", fov, images)
    bf = ImageName(plate=PLATE, well="D02", field=1, channel=4, action=4, z=1)
    write_tiff(truth / format_name(bf), np.zeros((64, 80), np.uint16))  # brightfield: ignored

    code = cli.main(["evaluate", "--truth", str(tmp_path / "plate"), "--pred", str(pred),
                     "--magnification", "20x", "--out", str(out)])
    assert code == 0
    for name in ("features_truth.csv", "features_pred.csv", "objects_truth_nuclei_no_edge.csv",
                 "objects_pred_nuclei_no_edge.csv", "scores.json", "report.html"):
        assert (out / name).is_file(), name
    frame = pd.read_csv(out / "features_pred.csv")
    assert list(frame.columns) == list(IMAGE_COLUMNS) and len(frame) == 2
    assert frame["Metadata_FoV"].tolist() == ["F001", "F002"]
    objects = pd.read_csv(out / "objects_truth_nuclei_no_edge.csv")
    assert list(objects.columns) == ["ImageNumber", "Metadata_Well", "Metadata_FoV", "ObjectNumber", "AreaShape_Area"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["20x"]["pixelwise"] == 0.0 and scores["20x"]["featurewise"] == 0.0
    assert scores["20x"]["score"] == 0.0 and scores["total"] == 0.0 and scores["20x"]["n_fields"] == 2
    assert scores["20x"]["excluded_features"] == {"Count_Defective_lipid_droplets": "target median over fields is 0"}
    assert "data:image/png;base64," in (out / "report.html").read_text()
    printed = capsys.readouterr().out
    assert "20x" in printed and "total" in printed and "1 features excluded" in printed


def test_library_function_takes_report_sections_from_a_hook(tmp_path):
    truth, pred, out = tmp_path / "truth", tmp_path / "pred", tmp_path / "eval"
    write_triplet(truth, "D02", 1, make_images(1))
    write_triplet(pred, "D02", 1, make_images(2))
    seen = []

    def sections(scores):
        seen.extend(scores)
        return [ReportSection("Hooked", f"<p>{len(scores)} score(s), n_fields {scores[0].n_fields}</p>")]

    scores = evaluate_folders(truth, pred, out=out, magnification="20x", measure=fake_measure,
                              report_sections=sections, report_fields=0)
    assert seen == scores and scores[0].n_fields == 1 and scores[0].pixelwise.value > 0
    assert "<h2>Hooked</h2>\n<p>1 score(s), n_fields 1</p>" in (out / "report.html").read_text()


def test_missing_and_extra_predictions_are_reported_not_shifted(tmp_path, fake):
    truth, pred, out = tmp_path / "truth", tmp_path / "pred", tmp_path / "eval"
    for fov in (1, 2, 3):
        write_triplet(truth, "B02", fov, make_images(fov))
    write_triplet(pred, "B02", 1, make_images(1))
    write_triplet(pred, "B02", 3, make_images(3))  # F002 missing: later rows must not shift
    write_triplet(pred, "H12", 9, make_images(9))  # extra
    code = cli.main(["evaluate", "--truth", str(truth), "--pred", str(pred), "--magnification", "40x",
                     "--out", str(out), "--workers", "2"])
    assert code == 0
    scores = json.loads((out / "scores.json").read_text())["40x"]
    assert scores["missing_predictions"] == ["B02 F002"] and scores["extra_predictions"] == ["H12 F009"]
    assert scores["n_fields"] == 2 and scores["pixelwise"] == 0.0 and scores["featurewise"] == 0.0


def test_several_magnifications_are_weighted_by_field_count(tmp_path, fake):
    out = tmp_path / "eval"
    for mag, n in (("20x", 1), ("60x", 3)):
        for fov in range(1, n + 1):
            images = make_images(fov)
            write_triplet(tmp_path / "truth" / f"{mag}_images", "C03", fov, images)
            changed = dict(images, C02=images["C02"] + np.uint16(50 if mag == "20x" else 0))
            write_triplet(tmp_path / "pred" / f"{mag}_images", "C03", fov, changed)
    assert cli.main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                     "--out", str(out), "--report-fields", "0"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["60x"]["score"] == 0.0 and scores["20x"]["score"] > 0
    assert scores["total"] == pytest.approx(scores["20x"]["score"] * 1 / 4)
    assert (out / "20x" / "features_truth.csv").is_file() and (out / "60x" / "features_pred.csv").is_file()


@pytest.mark.parametrize(
    "setup, args, expected",
    [
        ("none", ["--magnification", "20x"], "missing_truth: no such folder (--truth)"),
        ("empty", ["--magnification", "20x"], "truth: no CV7000 images found"),
        ("flat", [], "give the magnification (--magnification: 20x | 40x | 60x)"),
        ("flat", ["--magnification", "20x", "--workers", "0"], "--workers must be at least 1, got 0"),
        ("flat", ["--magnification", "20x", "--report-fields", "-1"], "--report-fields must be 0 or more"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, fake, capsys, setup, args, expected):
    truth = tmp_path / "missing_truth"
    if setup in ("empty", "flat"):
        truth = tmp_path / "truth"
        truth.mkdir()
        if setup == "flat":
            write_triplet(truth, "D02", 1, make_images(0))
    pred = tmp_path / "pred"
    write_triplet(pred, "D02", 1, make_images(0))
    code = cli.main(["evaluate", "--truth", str(truth), "--pred", str(pred), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err


def test_prediction_of_another_size_is_refused_naming_the_file(tmp_path, fake, capsys):
    write_triplet(tmp_path / "truth", "D02", 1, make_images(0))
    write_triplet(tmp_path / "pred", "D02", 1, make_images(0, shape=(64, 64)))
    code = cli.main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                     "--magnification", "20x", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "D02_T0001F001L01A01Z01C01.tif: size 64x64 differs from the target's 64x80" in err


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "vstain evaluate --truth" in capsys.readouterr().out


@pytest.mark.slow
def test_real_measurements_end_to_end(tmp_path):
    """The real pipeline on a 384x384 synthetic 20x field: a degraded prediction scores worse than a copy."""
    pytest.importorskip("vstain.evaluation.pipeline")
    images = synthetic_field((384, 384), magnification="20x", seed=3)
    write_triplet(tmp_path / "truth", "D02", 1, images)
    rng = np.random.default_rng(0)
    noisy = {c: np.clip(im + rng.normal(0, 60, im.shape), 0, 65535).astype(np.uint16) for c, im in images.items()}
    write_triplet(tmp_path / "pred", "D02", 1, noisy)
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                     "--magnification", "20x", "--out", str(out)]) == 0
    truth_table = pd.read_csv(out / "features_truth.csv")
    assert list(truth_table.columns) == list(IMAGE_COLUMNS)
    assert truth_table.loc[0, "Count_nuclei"] > 0
    scores = json.loads((out / "scores.json").read_text())["20x"]
    assert scores["n_fields"] == 1 and scores["pixelwise"] > 0
    assert scores["featurewise"] is not None and scores["featurewise"] >= 0
    assert (out / "objects_truth_nuclei_no_edge.csv").is_file()
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_summary_and_report_name_the_features_a_runaway_score_rests_on(tmp_path, monkeypatch, capsys):
    # Every feature agrees but one, which grows with the lipid image: the whole featurewise error is
    # that feature's, and the summary and the report say so, naming it and its target median.
    runaway = "StDev_cells_no_edge_AreaShape_Compactness"

    def measure(nuclei, lipids, cytoplasm, *, magnification):
        measured = fake_measure(nuclei, lipids, cytoplasm, magnification=magnification)
        features = dict.fromkeys(measured.features, 1.0)
        features[runaway] = float(lipids.mean())
        return FakeMeasurements(features, measured.objects, measured.labels, [])

    monkeypatch.setattr("vstain.evaluation.table.default_measure", lambda: measure)
    truth, pred, out = tmp_path / "truth", tmp_path / "pred", tmp_path / "eval"
    for fov in (1, 2):
        images = make_images(fov)
        write_triplet(truth, "D02", fov, images)
        write_triplet(pred, "D02", fov, {**images, "C02": images["C02"] * 2})
    assert cli.main(["evaluate", "--truth", str(truth), "--pred", str(pred), "--magnification", "20x",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if "of the featurewise error comes from" in x)
    assert line.startswith("20x: 100% of the featurewise error comes from 1 of ")
    assert f"{runaway} 1 (target median " in line and "(report.html, 'Feature error')" in line
    assert "100% of the featurewise error comes from" in (out / "report.html").read_text()


def test_summary_names_no_feature_when_the_error_is_spread(tmp_path, fake, capsys):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    for fov in (1, 2):
        images = make_images(fov)
        write_triplet(truth, "D02", fov, images)
        write_triplet(pred, "D02", fov, {**images, "C02": images["C02"] * 2})
    assert cli.main(["evaluate", "--truth", str(truth), "--pred", str(pred), "--magnification", "20x",
                     "--out", str(tmp_path / "eval")]) == 0
    assert "of the featurewise error comes from" not in capsys.readouterr().out
