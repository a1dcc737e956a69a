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


def test_unconfident_wells_of_a_site_that_agree_give_its_consensus():
    measured = {
        ("60x", "B02", 1, "lipids"): (-3.0, -3.0, 1.0),  # the one confident site
        # site 2: two wells, neither confident, within 0.5 px of each other -> their median
        ("60x", "B02", 2, "lipids"): (-1.9, -0.9, 0.25),
        ("60x", "B03", 2, "lipids"): (-2.0, -0.7, 0.375),
        # site 3: 3 px apart -> no agreement, the stain consensus
        ("60x", "B02", 3, "lipids"): (-2.0, -0.9, 0.25),
        ("60x", "B03", 3, "lipids"): (1.0, -0.9, 0.25),
        # site 4: estimates no tile supported (a blank stain gives (0, 0) everywhere) never count
        ("60x", "B02", 4, "lipids"): (0.0, 0.0, 0.0),
        ("60x", "B03", 4, "lipids"): (0.0, 0.0, 0.0),
    }
    table = resolve(measured)
    rows = {(r.well, r.field): r for r in table.rows}
    for well in ("B02", "B03"):
        assert rows[(well, 2)].source == "site consensus"
        assert rows[(well, 2)].offset == pytest.approx((-1.95, -0.8))
    # stain consensus: the median of the two sites' offsets, (-3, -3) and (-1.95, -0.8)
    for key in [("B02", 3), ("B03", 3), ("B02", 4), ("B03", 4)]:
        assert rows[key].source == "stain consensus"
        assert rows[key].offset == pytest.approx((-2.475, -1.9))
    # a majority is needed: two of three wells agree, two of four do not
    three = {("60x", w, 5, "cytoplasm"): v for w, v in
             [("B02", (1.0, 1.0, 0.1)), ("B03", (1.2, 1.3, 0.2)), ("B04", (-6.0, 4.0, 0.3))]}
    assert resolve(three).offset("60x", "B04", 5, "cytoplasm") == pytest.approx((1.1, 1.15))
    four = {**three, ("60x", "B05", 5, "cytoplasm"): (7.0, -7.0, 0.3)}
    assert {r.source for r in resolve(four).rows} == {"none"}


def test_a_fallback_to_other_stains_adds_the_plates_difference_between_the_stains():
    measured = {
        ("20x", "B02", 1, "lipids"): (1.0, 1.0, 1.0),
        ("20x", "B03", 1, "lipids"): (1.0, 1.0, 1.0),
        ("20x", "B02", 2, "lipids"): (2.0, 2.0, 1.0),
        ("20x", "B02", 1, "cytoplasm"): (1.5, 0.8, 1.0),
        ("20x", "B03", 1, "cytoplasm"): (1.3, 0.8, 1.0),
        ("20x", "B02", 2, "cytoplasm"): (9.0, 9.0, 0.0),  # no confident well at site 2
        ("20x", "B02", 2, "nuclei"): (0.0, 0.0, 0.0),
    }
    # cytoplasm - lipids on the two fields where both are confident: (0.5, -0.2), (0.3, -0.2)
    table = resolve(measured)
    cytoplasm = table.offset("20x", "B02", 2, "cytoplasm")
    assert cytoplasm == pytest.approx((2.4, 1.8))
    # nuclei: no difference measured (never confident), and the field's cytoplasm is itself a
    # fallback: the lipids, unmoved
    assert table.offset("20x", "B02", 2, "nuclei") == pytest.approx((2.0, 2.0))
    # a plate relative offset of the nuclei through the cytoplasm is their difference to it, and to
    # the lipids through the cytoplasm's: (2, 2) + (0.4, -0.2) + (0.1, 0.2) on a fallback field
    relative = {("20x", "nuclei"): ("cytoplasm", 0.1, 0.2)}
    nuclei = [r for r in resolve(measured, relative=relative).rows if r.stain == "nuclei"][0]
    assert nuclei.source == "field consensus" and nuclei.offset == pytest.approx((2.5, 2.0))
    # one field of both stains is not enough to measure their difference: the lipids as they are
    del measured[("20x", "B03", 1, "cytoplasm")]
    assert resolve(measured).offset("20x", "B02", 2, "cytoplasm") == pytest.approx((2.0, 2.0))


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
