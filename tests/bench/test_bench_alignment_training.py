"""`vstain bench alignment`: the none-vs-auto targets by hand, and the command's refusals."""

from __future__ import annotations

import pytest

from vstain.bench.alignment import alignment_training_checks, alignment_training_markdown
from vstain.cli import main


def _trial(score, pixelwise, featurewise):
    entry = {"score": score, "pixelwise": pixelwise, "featurewise": featurewise}
    return {"methods": {"model": entry, "linear": {"score": 0.9, "pixelwise": 0.8, "featurewise": 1.0}}}


def test_targets_by_hand():
    results = {"misaligned": {"none": _trial(0.6, 0.5, 0.7), "auto": _trial(0.45, 0.4, 0.5)},
               "aligned": {"none": _trial(0.40, 0.3, 0.5), "auto": _trial(0.404, 0.3, 0.508)}}
    checks = alignment_training_checks(results)
    assert checks["misaligned_featurewise_cut"] == pytest.approx(1 - 0.5 / 0.7)  # 28.6 %
    assert checks["misaligned_featurewise_target_met"] and checks["misaligned_pixelwise_lower"]
    assert checks["aligned_score_change"] == pytest.approx(0.01) and checks["aligned_target_met"]
    worse = {"misaligned": {"none": _trial(0.6, 0.5, 0.7), "auto": _trial(0.58, 0.55, 0.6)},
             "aligned": {"none": _trial(0.40, 0.3, 0.5), "auto": _trial(0.42, 0.3, 0.54)}}
    checks = alignment_training_checks(worse)
    assert not checks["misaligned_featurewise_target_met"] and not checks["misaligned_pixelwise_lower"]
    assert not checks["aligned_target_met"]  # +5 %
    text = alignment_training_markdown({"plates": results, "checks": alignment_training_checks(results)})
    assert "| misaligned | auto | 0.450 | 0.400 | 0.500 | 0.900 |" in text
    assert "cuts the featurewise error by 28.6%" in text and "(target <= +2 %: met)" in text


def test_alignment_bench_runs_alone(capsys):
    assert main(["bench", "alignment", "inference", "--out", "x"]) == 2
    assert "runs alone" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["bench", "inference", "--max-shift", "8"], "--max-shift is for `vstain bench alignment` alone"),
    (["bench", "alignment", "--max-shift", "0"], "--max-shift 0: expected a cap above 0"),
])
def test_max_shift_is_refused_where_it_would_do_nothing(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_alignment_bench_refuses_a_folder_made_with_another_shift(tmp_path):
    from vstain.bench.alignment import run_alignment_training
    from vstain.errors import VstainError

    plate = tmp_path / "misaligned" / "plate"
    plate.mkdir(parents=True)
    (plate / "plate.json").write_text('{"max_shift_px": 6.0}')
    (tmp_path / "misaligned" / "split.csv").write_text("")
    with pytest.raises(VstainError, match="made with --max-shift 6, not 8"):
        run_alignment_training(tmp_path, max_shift_px=8.0, smoke=True, log=lambda line: None)
