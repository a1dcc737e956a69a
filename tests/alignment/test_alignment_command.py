"""``vstain align`` end to end on a tiny plate of noise: every stain is featureless, so it warns and falls back."""

from __future__ import annotations

from vstain.alignment.offsets import OffsetTable
from vstain.cli import main


def test_align_command_writes_csv_plot_and_warns_naming_fields(tmp_path, random_plate, capsys):
    plate = random_plate
    out = tmp_path / "offsets.csv"
    assert main(["align", str(plate), "--out", str(out), "--quiet"]) == 0
    table = OffsetTable.load(out)
    assert len(table) == 4 * 3  # 2 wells x 2 fields x 3 stains
    assert {r.source for r in table.rows} <= {"none", "field consensus", "site consensus", "stain consensus",
                                                "measured"}
    assert out.with_suffix(".png").stat().st_size > 0
    captured = capsys.readouterr()
    assert "warning: 20x nuclei: low confidence" in captured.err and "B02 F001" in captured.err
    assert "F001" in captured.out  # the site summary


def test_align_command_refuses_a_folder_as_out(tmp_path, random_plate, capsys):
    assert main(["align", str(random_plate), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
