"""`vstain check | stats | cache` end to end on tiny plates: output, exit codes, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from plate_files import make_plate

from vstain.cli import main
from vstain.plate.cache import PlateCache
from vstain.plate.index import index_plate
from vstain.plate.splits import Split
from vstain.plate.stats import PlateStats, compute_stats


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def bf_name(well: str, field: int, z: int) -> str:
    return f"AssayPlate_Greiner_#655090_{well}_T0001F{field:03d}L01A04Z{z:02d}C04.tif"


@pytest.mark.parametrize("command", ["check", "stats", "cache", "convert"])
def test_help_shows_an_example(command: str, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"vstain {command} " in capsys.readouterr().out.split("example")[1]


def test_check_valid_plate(plate: Path, capsys):
    assert main(["check", str(plate)]) == 0
    out = capsys.readouterr().out
    assert "4 valid fields in 2 wells" in out and "no problems found" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("20x")]
    assert rows == [
        ["20x", "B03", "2", "2", "2", "2", "0", "16x16", "0"],
        ["20x", "C02", "2", "2", "2", "2", "0", "16x16", "0"],
    ]
    assert main(["check", str(plate), "--fields"]) == 0
    per_field = [line for line in capsys.readouterr().out.splitlines() if " F00" in line]
    assert len(per_field) == 4 and all("7/7" in line for line in per_field)


def test_check_reports_each_problem_once_and_exits_1(plate: Path, capsys):
    folder = plate / "20x_images"
    (folder / bf_name("B03", 1, 6)).unlink()  # missing plane
    shutil.copy(folder / bf_name("B03", 2, 1), folder / (bf_name("B03", 2, 1) + "f"))  # duplicate .tiff
    (folder / bf_name("C02", 1, 2)).write_bytes(b"corrupt")  # unreadable
    tifffile.imwrite(folder / bf_name("C02", 2, 3), np.zeros((16, 16), np.int32))  # not uint16
    (folder / "scan_overview.tif").write_bytes(b"?")  # unknown name
    before = snapshot(plate)
    assert main(["check", str(plate)]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(problems) == 5
    names = (bf_name("B03", 1, 1), bf_name("B03", 2, 1) + "f", bf_name("C02", 1, 2), bf_name("C02", 2, 3),
             "scan_overview.tif")
    for name in names:
        assert sum(name in line for line in problems) == 1, name
    assert "5 errors, 0 warnings" in out and "0 valid fields in 0 wells" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("20x")]
    assert [(r[1], r[2], r[-1]) for r in rows] == [("B03", "0", "2"), ("C02", "0", "2")]  # well, fields, issues
    assert snapshot(plate) == before
    assert main(["check", str(plate), "--max-issues", "2"]) == 1
    assert "... and 3 more" in capsys.readouterr().out


def test_check_flat_folder_and_bad_arguments(tmp_path: Path, capsys):
    make_plate(tmp_path / "flat", flat=True, wells=("D02",), fields=1)
    assert main(["check", str(tmp_path / "flat"), "--magnification", "60x"]) == 0
    assert "60x" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "flat")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give the magnification (--magnification: 20x | 40x | 60x)" in err
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err


def test_stats_writes_json_equal_to_the_library(plate: Path, tmp_path: Path, capsys):
    out = tmp_path / "stats.json"
    assert main(["stats", str(plate), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert PlateStats.load(out).channels == compute_stats(index_plate(plate).fields).channels


def test_stats_make_split_then_describe_its_train_subset(tmp_path: Path, capsys):
    root = tmp_path / "p"
    make_plate(root, wells=("B03", "C02", "D02"), fields=2)
    split_csv, out = tmp_path / "split.csv", tmp_path / "stats.json"
    assert main(["stats", str(root), "--make-split", str(split_csv), "--holdout-wells", "B03", "--out", str(out)]) == 0
    assert "20x 4 train / 2 validation" in capsys.readouterr().out
    split = Split.load(split_csv)
    assert {w for _, w, _ in split.keys("validation")} == {"B03"}
    stats = PlateStats.load(out)
    assert stats.source["subset"] == "train" and stats.source["fields"] == {"20x": 4}
    train = [f for f in index_plate(root).fields if f.key in split.keys("train")]
    assert stats.channels == compute_stats(train).channels
    # the same split file read back describes the validation subset
    out_test = tmp_path / "validation.json"
    assert main(["stats", str(root), "--split", str(split_csv), "--subset", "validation", "--out", str(out_test)]) == 0
    assert PlateStats.load(out_test).source["fields"] == {"20x": 2}
    # random fields per magnification, seeded
    random_split = ["--make-split", str(tmp_path / "r.csv"), "--holdout-fields", "2", "--seed", "3"]
    assert main(["stats", str(root), *random_split]) == 0
    assert len(Split.load(tmp_path / "r.csv").keys("validation")) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "nothing to do"),
        (["--out", "{out}", "--split", "{missing}"], "no such split file"),
        (["--out", "{out}", "--split", "{bad_split}"], "lacks column"),
        (["--out", "{out}", "--split", "{foreign_split}"],
         "1 field(s) of the split are not on the plate: 20x H01 F001"),
        (["--make-split", "{split}"], "needs --holdout-wells"),
        (["--holdout-wells", "B03", "--out", "{out}"], "need --make-split"),
        (["--make-split", "{split}", "--holdout-fields", "all"], "give a number of fields or 'reference'"),
        (["--make-split", "{split}", "--holdout-fields", "4"], "cannot hold out 4 of the 4 20x fields"),
        (["--make-split", "{split}", "--split", "{split}", "--holdout-wells", "B03"], "not both"),
        (["--out", "{folder}"], "is a folder; --out needs a file name"),
    ],
)
def test_stats_bad_input_is_one_line_and_overwrites_nothing(plate: Path, tmp_path: Path, capsys, extra, message):
    paths = {
        "out": tmp_path / "stats.json",
        "missing": tmp_path / "missing.csv",
        "bad_split": tmp_path / "bad.csv",
        "foreign_split": tmp_path / "foreign.csv",
        "split": tmp_path / "split.csv",
        "folder": tmp_path / "a_folder",
    }
    paths["folder"].mkdir()
    paths["bad_split"].write_text("well,field\nB03,1\n")
    paths["foreign_split"].write_text("magnification,well,field,subset\n20x,H01,1,train\n")
    paths["out"].write_text("previous results")
    before = snapshot(tmp_path)
    args = ["stats", str(plate), *(a.format(**paths) for a in extra)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert snapshot(tmp_path) == before


def test_stats_refuses_a_plate_with_errors_unless_asked(plate: Path, tmp_path: Path, capsys):
    (plate / "20x_images" / bf_name("B03", 1, 2)).unlink()
    out = tmp_path / "stats.json"
    assert main(["stats", str(plate), "--out", str(out)]) == 2
    assert "lacks brightfield plane(s)" in capsys.readouterr().err and not out.exists()
    assert main(["stats", str(plate), "--out", str(out), "--skip-invalid"]) == 0
    assert PlateStats.load(out).source["fields"] == {"20x": 3}


def test_cache_command(plate: Path, tmp_path: Path, capsys):
    before = snapshot(plate)
    assert main(["cache", str(plate)]) == 0
    assert "4 fields cached, 0 already up to date" in capsys.readouterr().out
    assert main(["cache", str(plate)]) == 0
    assert "0 fields cached, 4 already up to date" in capsys.readouterr().out
    assert len(PlateCache(tmp_path / "plate.vstain-cache")) == 4
    assert main(["cache", str(plate), "--out", str(plate / "cache")]) == 2
    assert "inside the plate" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("keep me")
    assert main(["cache", str(plate), "--out", str(tmp_path / "a_file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "keep me"
    assert snapshot(plate) == before
    manifest = json.loads((tmp_path / "plate.vstain-cache" / "manifest.json").read_text())
    assert manifest["plate"] == str(plate.resolve())


def test_plate_and_its_commands_never_import_torch(plate: Path):
    import subprocess
    import sys

    code = (
        "import sys, vstain.plate, vstain.plate.report\n"
        "from vstain.cli import main\n"
        f"assert main(['check', {str(plate)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
