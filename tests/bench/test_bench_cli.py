"""``vstain bench``: sections chosen by name, the --no-* flags, JSON output, one-line errors."""

from __future__ import annotations

import json

import pytest

from vstain.cli import main


def test_bench_runs_the_named_section_only(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "evaluation", "--field", "64x80", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["sections"] == ["evaluation"] and "inference" not in result and "training" not in result
    assert result["evaluation"][0]["field"] == "64x80"
    assert "measure_field" in capsys.readouterr().out


def test_no_section_named_means_all_and_the_flags_leave_sections_out(tmp_path, monkeypatch):
    import vstain.bench.run as run

    ran = []
    monkeypatch.setattr(run, "SECTIONS", {name: (lambda context, name=name: ran.append(name) or [])
                                          for name in run.SECTIONS})
    assert main(["bench", "--field", "32x32"]) == 0
    assert ran == ["inference", "training", "evaluation"]
    ran.clear()
    assert main(["bench", "--no-training", "--out", str(tmp_path / "b.json")]) == 0
    assert ran == ["inference", "evaluation"]
    ran.clear()
    assert main(["bench", "all", "--no-evaluation"]) == 0
    assert ran == ["inference", "training"]


def test_leaving_out_every_section_is_a_one_line_error(capsys):
    assert main(["bench", "training", "--no-training"]) == 2
    assert capsys.readouterr().err.strip() == "error: nothing to benchmark: every section was left out"


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bench", "speed"])
    assert exit.value.code == 2
    assert "invalid choice: 'speed'" in capsys.readouterr().err
