"""Offsets table: consensus fallbacks (hand-checked), CSV round trip, refusals of bad or mismatched files."""

from __future__ import annotations

import pytest

from vstain.alignment.offsets import OffsetTable, SiteOffsets, resolve
from vstain.alignment.plate import low_confidence_warnings
from vstain.errors import AlignmentError, ConfigNotFound, VstainError


def _measured():
    # site 1: lipids confident in both wells (1, 2) and (3, 4) -> site consensus (2, 3)
    # nuclei never confident -> B02 F001 uses the field's lipids (1, 2); cytoplasm at F001 B02 confident
    return {
        ("20x", "B02", 1, "lipids"): (1.0, 2.0, 0.9),
        ("20x", "B03", 1, "lipids"): (3.0, 4.0, 0.8),
        ("20x", "B04", 1, "lipids"): (9.0, 9.0, 0.1),
        ("20x", "B02", 1, "nuclei"): (7.0, -7.0, 0.0),
        ("20x", "B02", 1, "cytoplasm"): (1.0, 2.0, 1.0),
        ("20x", "B04", 1, "nuclei"): (0.0, 0.0, 0.2),
    }


def test_resolve_uses_measured_then_site_then_field_consensus():
    table = resolve(_measured())
    by = {(r.well, r.stain): r for r in table.rows}
    assert by[("B02", "lipids")].source == "measured" and by[("B02", "lipids")].offset == (1.0, 2.0)
    assert by[("B04", "lipids")].source == "site consensus" and by[("B04", "lipids")].offset == (2.0, 3.0)
    assert by[("B04", "lipids")].measured_dy_px == 9.0  # what the field gave is kept
    assert by[("B02", "nuclei")].source == "field consensus" and by[("B02", "nuclei")].offset == (1.0, 2.0)
    # B04 has no confident stain of its own: every confident stain at the site, (1,2), (3,4), (1,2) -> (1, 2)
    assert by[("B04", "nuclei")].source == "field consensus" and by[("B04", "nuclei")].offset == (1.0, 2.0)
    assert table.site_offsets()[("20x", "lipids", 1)] == (2.0, 3.0)


def test_resolve_per_site_gives_every_field_its_site_consensus():
    table = resolve(_measured(), per="site")
    by = {(r.well, r.stain): r for r in table.rows}
    # both lipids wells were confident, (1, 2) and (3, 4): all three wells use their median (2, 3)
    for well in ("B02", "B03", "B04"):
        assert by[(well, "lipids")].source == "site consensus" and by[(well, "lipids")].offset == (2.0, 3.0)
    assert by[("B02", "lipids")].measured_dy_px == 1.0 and by[("B02", "lipids")].confidence == 0.9
    # cytoplasm: one confident well is its own site consensus; nuclei: no confident well, fallbacks as before
    assert by[("B02", "cytoplasm")].source == "site consensus" and by[("B02", "cytoplasm")].offset == (1.0, 2.0)
    assert by[("B02", "nuclei")].source == "field consensus" and by[("B02", "nuclei")].offset == (1.0, 2.0)
    # warnings name only the fields whose own estimate was not confident
    lines = low_confidence_warnings(table)
    assert [line.split(":")[0] for line in lines] == ["20x nuclei", "20x lipids"]
    assert "B04 F001" in lines[1] and "B02 F001" not in lines[1]
    with pytest.raises(AlignmentError, match="per='well'"):
        resolve(_measured(), per="well")  # type: ignore[arg-type]


def test_blank_stain_everywhere_gives_zero_and_a_warning_naming_fields():
    table = resolve({("40x", "C05", 3, "nuclei"): (5.0, 5.0, 0.0), ("40x", "C06", 3, "nuclei"): (-4.0, 1.0, 0.1)})
    assert [r.offset for r in table.rows] == [(0.0, 0.0), (0.0, 0.0)]
    assert {r.source for r in table.rows} == {"none"}
    (line,) = low_confidence_warnings(table)
    assert "40x nuclei" in line and "C05 F003" in line and "C06 F003" in line and "blank" in line


def test_csv_round_trip_and_site_offsets(tmp_path):
    table = resolve(_measured())
    path = table.save(tmp_path / "offsets.csv")
    header = path.read_text().splitlines()[0]
    assert header == "magnification,well,field,stain,dy_px,dx_px,confidence,source,measured_dy_px,measured_dx_px"
    loaded = OffsetTable.load(path)
    assert [(r.well, r.field, r.stain, r.offset, r.source) for r in loaded.rows] == [
        (r.well, r.field, r.stain, r.offset, r.source) for r in table.rows]
    sites = SiteOffsets.from_table(loaded, "20x")
    assert sites.offset("lipids", 1) == (2.0, 3.0)
    assert SiteOffsets.from_dict(sites.to_dict()) == sites


@pytest.mark.parametrize("text, message", [
    ("magnification,well,field,stain\n", "lacks column(s) dy_px"),
    ("magnification,well,field,stain,dy_px,dx_px,confidence,source\n20x,B02,1,nuclei,1,x,1,measured\n",
     "column dx_px is 'x'"),
    ("magnification,well,field,stain,dy_px,dx_px,confidence,source\n20x,B02,1,dapi,1,1,1,measured\n",
     "unknown stain 'dapi'"),
    ("magnification,well,field,stain,dy_px,dx_px,confidence,source\n20x,B02,1,nuclei,1,1,1,guessed\n",
     "source 'guessed'"),
])
def test_bad_offsets_file_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "offsets.csv"
    path.write_text(text)
    with pytest.raises(AlignmentError, match="offsets.csv") as info:
        OffsetTable.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_mismatched_plate_are_refused(tmp_path):
    with pytest.raises(ConfigNotFound, match="no such offsets file"):
        OffsetTable.load(tmp_path / "nope.csv")
    sites = SiteOffsets.from_table(resolve(_measured()), "20x", source="offsets.csv")
    with pytest.raises(VstainError, match="offsets.csv: offsets are for 20x, the plate is 40x"):
        sites.check_covers("40x", [1], ["lipids"], source="offsets.csv")
    with pytest.raises(AlignmentError, match="no 20x lipids offset for site\\(s\\) F002, F003"):
        sites.check_covers("20x", [1, 2, 3], ["lipids"], source="offsets.csv")
    with pytest.raises(AlignmentError, match="offsets are for 20x, not 60x"):
        SiteOffsets.from_table(resolve(_measured()), "60x")
    sites.check_covers("20x", [1], ["lipids", "nuclei", "cytoplasm"])  # covered: no error
