"""Nuclei registered through the holes they leave in the cytoplasm stain (vstain.alignment.through_stain)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from vstain.alignment.offsets import OffsetTable, resolve
from vstain.alignment.plate import align_fields
from vstain.alignment.through_stain import (
    FieldMatch,
    PlateRelative,
    RelativeOffset,
    best_offset,
    bootstrap_error,
    describe_standard_error,
    field_match,
    fields_relative,
    plate_agreement,
    plate_relative,
    pooled_offset,
    relative_offset,
)
from vstain.vocabulary import PIXEL_SIZE_UM


def _disks(shape, centres, radii) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for (cy, cx), (ry, rx) in zip(centres, radii):
        out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1.0
    return out


def _shifted(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``image`` moved by ``shift`` px (content at p goes to p + shift), exactly for band-limited images."""
    return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(image), shift)).real.astype(np.float32)


def _field(seed: int, r: tuple[float, float], *, magnification: str = "20x", side: int = 384, holes: float = 0.5):
    """C01, C02, C03 of a toy culture, C01 offset by ``r`` against C03 (a C03 structure at q is at C01 q - r)."""
    rng = np.random.default_rng(seed)
    scale = PIXEL_SIZE_UM["20x"] / PIXEL_SIZE_UM[magnification]
    shape = (side, side)
    count = int(14 * (side / 384) ** 2 / scale**2)
    centres = rng.uniform(20 * scale, side - 20 * scale, (count, 2))
    centres[:, 1] = rng.uniform(side // 6 + 20 * scale, side - 20 * scale, count)  # nuclei inside the cells
    nuclei = _disks(shape, centres, rng.uniform(9, 15, (count, 2)) * scale)
    radii = np.repeat(rng.uniform(3, 8, (3 * count, 1)) * scale, 2, axis=1)
    drops = _disks(shape, rng.uniform(0, side, (3 * count, 2)), radii)
    drops *= 1 - nuclei  # droplets sit beside the nucleus
    texture = 1.0 + 0.15 * ndimage.gaussian_filter(rng.normal(size=shape), 2 * scale) / 0.1
    cells = np.ones(shape, np.float32)
    cells[:, : side // 6] = 0.0  # a gap without cells
    blur = 1.5 * scale
    cytoplasm = ndimage.gaussian_filter(cells * texture * (1 - (1 - holes) * nuclei) * (1 - 0.95 * drops), blur)
    lipids = ndimage.gaussian_filter(drops, blur)
    chromatin = nuclei * (1 + 0.3 * ndimage.gaussian_filter(rng.normal(size=shape), scale))
    c01 = _shifted(ndimage.gaussian_filter(chromatin, blur), (-r[0], -r[1]))
    noise = lambda image, level: (100 + 1000 * image + rng.normal(0, level, shape)).astype(np.float32)  # noqa: E731
    return noise(c01, 10), noise(lipids, 10), noise(cytoplasm, 10)


@pytest.mark.parametrize(("magnification", "side"), [("20x", 384), ("40x", 512)])
def test_relative_offset_recovers_a_known_subpixel_offset(magnification, side):
    # Six toy fields (a dozen nuclei each, textured cytoplasm, droplets, a gap without cells): each
    # field within 0.5 px, the plate's offset within 0.15 px. At 40x the images are binned 2x2
    # first, so this also checks that the offset is scaled back to the field's pixels.
    r = (1.6, -0.9)
    matches = []
    for seed in range(6):
        c01, c02, c03 = _field(seed, r, magnification=magnification, side=side)
        found = relative_offset(c01, c03, magnification=magnification, lipids=c02)
        assert found is not None and found.explained > 0
        assert (found.dy, found.dx) == pytest.approx(r, abs=0.5), seed
        matches.append(field_match(c01, c03, magnification=magnification, lipids=c02))
        assert best_offset(matches[-1]) == found
    plate = plate_relative(matches)
    assert plate.confidence == 1.0 and plate.fields == plate.agreeing == plate.sampled == 6
    assert (plate.dy, plate.dx) == pytest.approx(r, abs=0.15)


def test_without_holes_the_fields_do_not_agree_and_nothing_is_claimed():
    # A cytoplasm stain as bright over the nucleus as beside it: no field may claim an offset
    # with the others agreeing (a wild offset with confidence would move every nucleus).
    matches = [field_match(*(lambda f: (f[0], f[2]))(_field(seed, (0.6, -0.9), holes=1.0)), magnification="20x")
               for seed in range(6)]
    plate = plate_relative(matches)
    assert plate is None or plate.confidence < 0.5


def test_plate_agreement_counts_the_fields_within_half_a_pixel():
    # A field without an estimate counts as not agreeing; fewer than two agreeing fields claim nothing.
    estimates = [RelativeOffset(0.0, 1.0, 0.1), RelativeOffset(0.2, 1.1, 0.1), RelativeOffset(3.0, 3.0, 0.1), None]
    assert plate_agreement(0.2, 1.1, estimates) == PlateRelative(0.2, 1.1, 0.5, 3, 2, 4)
    assert plate_agreement(0.2, 1.6, estimates) == PlateRelative(0.2, 1.6, 0.0, 3, 1, 4)  # one is not enough
    assert plate_agreement(4.7, -6.0, [RelativeOffset(4.7, -6.0, 0.01), None, None]).confidence == 0.0
    assert plate_relative([None, None]) is None


def test_the_plate_offset_is_the_peak_of_the_summed_matches():
    # Two hand-made matches whose peaks disagree: the sum's peak lies between them, nearer the one
    # with more structure, and a field without a match adds nothing.
    radius = 8
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    def match(cy, cx, weight):
        return FieldMatch(weight * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0), np.ones_like(yy, float), 1.0, 1)
    one, other = match(1, 0, 1.0), match(-1, 0, 3.0)
    assert best_offset(one).dy == pytest.approx(-1.0, abs=0.05)  # r = -s
    pooled = pooled_offset([one, other, None])
    assert best_offset(other).dy == pytest.approx(1.0, abs=0.05)
    assert 0.0 < pooled.dy < 1.0 and pooled.dy > 0.5 and pooled.dx == pytest.approx(0.0, abs=1e-6)
    assert pooled_offset([None]) is None
    # A sum whose peak lies at the edge of the search claims nothing, even where a field matched.
    edge = match(radius, 0, 10.0)
    assert best_offset(edge) is None and pooled_offset([one, edge]) is None
    plate = plate_relative([one, edge])
    assert plate.confidence == 0.0 and (plate.dy, plate.fields, plate.sampled) == (pytest.approx(-1.0, abs=0.05), 1, 2)


def _bump(cy: float, cx: float, width: float = 2.0, radius: int = 8) -> FieldMatch:
    """A hand-made match whose own peak is at shift (cy, cx), i.e. r = (-cy, -cx)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return FieldMatch(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2)), np.ones_like(yy, float), 1.0, 1)


def test_a_precise_sum_is_trusted_where_single_fields_scatter():
    # Twelve fields whose own peaks lie 0.6 px either side of 0 (as single 60x fields with few
    # nuclei do): none agrees with the pooled offset within 0.5 px, but the sum of twelve pins it
    # down (standard error of a mean of twelve +-0.6 draws: 0.6 / sqrt(12) = 0.17 px).
    scattered = [_bump(0.6 if i % 2 else -0.6, 0.0) for i in range(12)]
    plate = plate_relative(scattered)
    assert plate.confidence == 0.0 and plate.agreeing == 0
    assert (plate.dy, plate.dx) == (pytest.approx(0.0, abs=0.05), pytest.approx(0.0, abs=1e-6))
    assert plate.standard_error == pytest.approx(0.6 / np.sqrt(12), rel=0.25)
    assert plate.trusted(0.5)
    # Fields 1.5 px either side: the sum could be anywhere within a few tenths, so it is not used.
    wide = plate_relative([_bump(1.5 if i % 2 else -1.5, 0.0) for i in range(12)])
    assert wide.standard_error > 0.2 and not wide.trusted(0.5)
    # Identical fields: every resample gives the same sum's peak.
    assert bootstrap_error([_bump(0.3, -0.2)] * 6) == pytest.approx(0.0, abs=1e-9)


def test_the_standard_error_needs_five_matched_fields():
    # Four fields (and any number without a match) are too few to say how their sum scatters, so
    # only the fields' agreement can make the offset trusted.
    four = [_bump(0.6 if i % 2 else -0.6, 0.0) for i in range(4)] + [None] * 8
    assert bootstrap_error(four) is None
    plate = plate_relative(four)
    assert plate.standard_error is None and not plate.trusted(0.5)
    assert "too few fields" in describe_standard_error(plate)
    # Agreement alone still suffices; a standard error alone suffices; neither: not trusted.
    assert PlateRelative(0.0, 0.0, 0.5, 4, 2, 4).trusted(0.5)
    assert PlateRelative(0.0, 0.0, 0.25, 8, 2, 8, standard_error=0.2).trusted(0.5)
    assert not PlateRelative(0.0, 0.0, 0.25, 8, 2, 8, standard_error=0.21).trusted(0.5)
    # A resample without a peak inside the search makes the sum untrustworthy, not precise.
    edge = [_bump(8, 0.0, width=0.7)] * 5 + [_bump(0.0, 0.0, width=0.7)]
    assert bootstrap_error(edge) == float("inf")


def test_fields_relative_needs_both_stains():
    c01, c02, c03 = _field(2, (0.0, 0.0))
    assert set(fields_relative({"nuclei": c01, "cytoplasm": c03, "lipids": c02}, "20x")) == {"nuclei"}
    assert fields_relative({"nuclei": c01, "lipids": c02}, "20x") == {}


def test_resolve_adds_the_relative_offset_to_the_cytoplasm_of_the_same_field():
    measured = {
        ("20x", "B02", 1, "cytoplasm"): (1.0, 2.0, 1.0),
        ("20x", "B02", 1, "nuclei"): (7.0, 7.0, 0.0),  # not confident
        ("20x", "B03", 1, "cytoplasm"): (1.5, 2.5, 1.0),
        ("20x", "B03", 1, "nuclei"): (0.9, 1.9, 1.0),  # confident: kept
        ("20x", "B02", 2, "cytoplasm"): (3.0, 4.0, 0.0),  # not confident, no confident well: stain consensus
        ("20x", "B02", 2, "nuclei"): (0.0, 0.0, 0.0),
    }
    relative = {("20x", "nuclei"): ("cytoplasm", 0.5, -0.25)}
    rows = {(r.well, r.field, r.stain): r for r in resolve(measured, relative=relative).rows}
    assert rows[("B02", 1, "nuclei")].offset == (1.5, 1.75) and rows[("B02", 1, "nuclei")].source == "relative"
    assert rows[("B03", 1, "nuclei")].offset == (0.9, 1.9) and rows[("B03", 1, "nuclei")].source == "measured"
    # The cytoplasm of F002 falls back to its stain consensus (median of the sites: 1.25, 2.25), which
    # was not measured on F002's site: the nuclei do not add their relative offset to a fallback,
    # they take their own stain consensus (the one confident nuclei site).
    cytoplasm = rows[("B02", 2, "cytoplasm")]
    assert cytoplasm.offset == (1.25, 2.25) and cytoplasm.source == "stain consensus"
    assert rows[("B02", 2, "nuclei")].offset == (0.9, 1.9) and rows[("B02", 2, "nuclei")].source == "stain consensus"
    # Without the relative offset, B02 F001's nuclei took the site's consensus (B03's confident nuclei).
    assert resolve(measured).offset("20x", "B02", 1, "nuclei") == (0.9, 1.9)
    # Per site, the site consensus of the nuclei' own confident wells comes first.
    per_site = resolve(measured, relative=relative, per="site")
    assert per_site.offset("20x", "B02", 1, "nuclei") == (0.9, 1.9)
    assert per_site.offset("20x", "B02", 2, "nuclei") == (0.9, 1.9)
    # A cytoplasm offset taken from its site's other wells is the cytoplasm's own: the nuclei build on it.
    measured[("20x", "B03", 2, "cytoplasm")] = (2.0, 3.0, 1.0)
    measured[("20x", "B03", 2, "nuclei")] = (0.0, 0.0, 0.0)
    rows = {(r.well, r.field, r.stain): r for r in resolve(measured, relative=relative).rows}
    assert rows[("B02", 2, "cytoplasm")].source == "site consensus"
    assert rows[("B02", 2, "nuclei")].offset == (2.5, 2.75) and rows[("B02", 2, "nuclei")].source == "relative"


def test_align_registers_synthetic_nuclei_through_the_cytoplasm(tmp_path, capsys):
    # vstain synth's nuclei are nearly invisible in brightfield (confidence ~0: they took the field
    # consensus of the other stains, 0.3-0.7 px off); through the cytoplasm they do better.
    from vstain.bench.alignment import true_offsets
    from vstain.cli import main
    from vstain.synth.plate import generate_plate

    plate = tmp_path / "plate"
    generate_plate(plate, magnification="20x", wells=2, fields=2, seed=4, size=(512, 512), max_shift_px=6.0)
    out = tmp_path / "offsets.csv"
    assert main(["align", str(plate), "--out", str(out), "--quiet", "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "20x nuclei through the cytoplasm: (" in printed and "(used where its own estimate" in printed
    table = OffsetTable.load(out)
    truth = true_offsets(plate)
    nuclei = [r for r in table.rows if r.stain == "nuclei"]
    assert len(nuclei) == 4 and {r.source for r in nuclei} <= {"relative", "measured"}
    assert "relative" in {r.source for r in nuclei}
    for r in nuclei:
        # Through the cytoplasm: the nuclei inherit the cytoplasm's error (up to 0.26 px here); the
        # offset between the two stains, the median of four small fields, is right to 0.2 px
        # (a sign error would be 0.5 px off: the true one is 0.27 px per axis).
        cytoplasm = table.offset("20x", r.well, r.field, "cytoplasm")
        true_nuclei, true_cytoplasm = (truth[("20x", r.well, r.field, s)] for s in ("nuclei", "cytoplasm"))
        assert np.subtract(r.offset, cytoplasm) == pytest.approx(np.subtract(true_nuclei, true_cytoplasm), abs=0.2)
        assert r.offset == pytest.approx(true_nuclei, abs=0.4), (r.well, r.field)


@pytest.mark.parametrize(("standard_error", "used"), [(0.1, True), (0.3, False)])
def test_align_uses_a_relative_offset_with_a_small_standard_error_even_where_few_fields_agree(
        tmp_path, monkeypatch, standard_error, used):
    # The wiring of PlateRelative.trusted into align_fields: the plate's relative offset is made to
    # look as on a 60x plate (no field agreeing) with a given standard error; the nuclei take it
    # only where that error is at most 0.2 px, and the warning names it where they do not.
    import vstain.alignment.plate as plate_module
    from vstain.plate.index import index_plate
    from vstain.synth.plate import generate_plate

    plate = tmp_path / "plate"
    generate_plate(plate, magnification="20x", wells=2, fields=2, seed=4, size=(512, 512), max_shift_px=6.0)
    real = plate_module.plate_relative
    monkeypatch.setattr(plate_module, "plate_relative", lambda matches: replace(
        real(matches), confidence=0.0, agreeing=0, standard_error=standard_error))
    alignment = plate_module.align_fields(index_plate(plate).fields)
    sources = {r.source for r in alignment.table.rows if r.stain == "nuclei"}
    assert ("relative" in sources) is used
    named = [w for w in alignment.warnings if "not registered through the cytoplasm" in w]
    assert (not named) if used else ("standard error 0.30 px" in named[0])


def test_the_relative_offset_is_measured_on_at_most_24_fields_per_magnification_spread_evenly():
    from types import SimpleNamespace

    from vstain.alignment.plate import RELATIVE_FIELDS, _relative_sample

    fields = [SimpleNamespace(magnification="20x")] * 50 + [SimpleNamespace(magnification="40x")] * 3
    chosen = _relative_sample(fields)
    at_20x = sorted(i for i in chosen if i < 50)
    assert RELATIVE_FIELDS == 24 and len(at_20x) == 24 and at_20x[0] == 0 and at_20x[-1] == 49
    assert max(np.diff(at_20x)) <= 3  # spread over the plate, not its first wells
    assert {50, 51, 52} <= chosen and len(chosen) == 27


def test_a_cytoplasm_stain_without_holes_leaves_the_nuclei_on_the_field_consensus_with_a_warning(tmp_path):
    # vstain synth with CellTracker as bright over the nucleus as beside it: nothing to register
    # the nuclei through, so the fields disagree, the route is not used and the warning says why.
    from vstain.plate.index import index_plate
    from vstain.synth.plate import generate_plate

    plate = tmp_path / "plate"
    generate_plate(plate, magnification="20x", wells=2, fields=2, seed=5, size=(512, 512), max_shift_px=6.0,
                   overrides={"cytoplasm_over_nucleus": 1.0})
    alignment = align_fields(index_plate(plate).fields)
    assert alignment.relatives[("20x", "nuclei")].confidence == 0.0
    assert {r.source for r in alignment.table.rows if r.stain == "nuclei"} == {"field consensus"}
    assert any(w.startswith("20x nuclei: not registered through the cytoplasm (") and "holes?" in w
               for w in alignment.warnings)
