"""report.html is valid, self-contained HTML with embedded PNG figures and every policy case listed."""

from __future__ import annotations

import base64
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk
from skimage.segmentation import expand_labels

from vstain.evaluation.columns import FEATURE_COLUMNS
from vstain.evaluation.metric import ChallengeScore, featurewise_score, pixelwise_score
from vstain.evaluation.report import FieldPanel, ReportSection, render_report, write_report


class Collector(HTMLParser):
    """Records tags, image sources, links and unclosed elements."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.mismatched: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])
        if tag == "script":
            self.external.append("script")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.mismatched.append(tag)


def make_score_and_panels():
    """A 3-field 20x score with one excluded feature, one NaN prediction and one extra field."""
    rng = np.random.default_rng(0)
    fields, truth_rows, pred_rows, panels = [], [], [], []
    for i, (well, fov) in enumerate([("D02", "F001"), ("D02", "F002"), ("D03", "F001")]):
        nuclei_labels = np.zeros((120, 160), np.int32)
        for k, (r, c) in enumerate([(30, 40), (80, 110), (60 + i * 5, 70)], start=1):
            nuclei_labels[disk((r, c), 12, shape=nuclei_labels.shape)] = k
        truth = {
            c: (rng.integers(300, 600, (120, 160)) + 1500 * (nuclei_labels > 0)).astype(np.uint16)
            for c in ("C01", "C02", "C03")
        }
        pred = {
            c: np.clip(t.astype(int) + rng.integers(-80, 80, t.shape), 0, None).astype(np.uint16)
            for c, t in truth.items()
        }
        fields.append((truth, pred))
        labels = {"nuclei": nuclei_labels, "cells": expand_labels(nuclei_labels, 10)}
        panels.append(FieldPanel(f"20x {well} {fov}", truth, pred, labels, labels))
        values = rng.uniform(1, 10, len(FEATURE_COLUMNS))
        truth_rows.append({"Metadata_Well": well, "Metadata_FoV": fov, **dict(zip(FEATURE_COLUMNS, values))})
        noisy = values * rng.uniform(0.8, 1.2, values.size)
        pred_rows.append({"Metadata_Well": well, "Metadata_FoV": fov, **dict(zip(FEATURE_COLUMNS, noisy))})
    truth_table, pred_table = pd.DataFrame(truth_rows), pd.DataFrame(pred_rows)
    truth_table["Count_Defective_lipid_droplets"] = 0.0  # zero median: excluded
    pred_table.loc[1, "Count_nuclei"] = math.nan  # failed segmentation: counted as 0
    pred_table = pd.concat([pred_table, pred_table.iloc[:1].assign(Metadata_Well="H12")])  # extra prediction
    score = ChallengeScore(
        "20x",
        pixelwise_score(fields),
        featurewise_score(truth_table, pred_table),
        warnings=("truth: D02 F001: cell threshold window clamped to 60 px <field too small>",),
    )
    return score, panels


@pytest.fixture()
def score_and_panels():
    return make_score_and_panels()


def test_report_is_self_contained_html_with_embedded_pngs(tmp_path, score_and_panels):
    score, panels = score_and_panels
    path = write_report(tmp_path / "report.html", [score], panels={"20x": panels[:2]}, sources={"truth": "/data/x"})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parser = Collector()
    parser.feed(text)
    parser.close()
    assert parser.stack == [] and parser.mismatched == []
    assert parser.external == []  # no link, script or remote image: opens offline
    # per-channel pixel error, per-feature error, and one panel figure per field shown
    assert len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert '<img src="data:image/png;base64,' in text
    assert len(text) < 1_500_000  # panels are downsampled


def test_report_lists_scores_exclusions_and_warnings(score_and_panels):
    score, _ = score_and_panels
    text = render_report([score])
    assert f"{score.score:.4g}" in text
    assert "Count_Defective_lipid_droplets" in text and "target median over fields is 0" in text
    assert "Predictions counted as 0" in text and "Count_nuclei" in text
    assert re.search(r"Extra predictions \(1;", text) and "H12 F001" in text
    assert "&lt;field too small&gt;" in text  # warnings are escaped
    assert "Policy" in text


def test_extra_sections_open_the_report_after_the_title(score_and_panels):
    score, _ = score_and_panels
    text = render_report([score], title="t", sources={"truth": "/plate"},
                         sections=[ReportSection("Demo & baselines", "<p id='extra'>x</p>"), ReportSection("Two", "")])
    assert text.index("<h1>t</h1>") < text.index("<h2>Demo &amp; baselines</h2>") < text.index("id='extra'")
    assert text.index("id='extra'") < text.index("<h2>Two</h2>") < text.index("<dt>truth</dt>")
    assert render_report([score]).count("<h2>") == render_report([score], sections=()).count("<h2>")
