"""Train/test splits: leave-wells-out, seeded random fields per magnification, CSV round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from vstain.errors import VstainError
from vstain.plate.splits import REFERENCE_HOLDOUT, Split, leave_wells_out, random_fields_out, read_split_keys

WELLS = ("B03", "B04", "C02", "C03", "C04", "D02", "D03", "D04")
# the challenge plate: 8 wells with 6 / 8 / 12 fields at 20x / 40x / 60x
KEYS = [(mag, well, f) for mag, n in (("20x", 6), ("40x", 8), ("60x", 12)) for well in WELLS for f in range(1, n + 1)]


def test_leave_one_well_out_like_reference_split_1():
    split = leave_wells_out(KEYS, ["b03"])
    assert split.counts() == {
        ("20x", "train"): 42, ("20x", "test"): 6,
        ("40x", "train"): 56, ("40x", "test"): 8,
        ("60x", "train"): 84, ("60x", "test"): 12,
    }  # fmt: skip
    assert {well for _, well, _ in split.keys("test")} == {"B03"}
    assert len(split.keys("train")) + len(split.keys("test")) == len(KEYS)


def test_leave_wells_out_errors():
    with pytest.raises(VstainError, match="well\\(s\\) H12 not on the plate"):
        leave_wells_out(KEYS, ["B03", "H12"])
    with pytest.raises(VstainError, match="nothing is left to train on"):
        leave_wells_out(KEYS, WELLS)


def test_random_fields_per_magnification_like_the_final_split():
    split = random_fields_out(KEYS, REFERENCE_HOLDOUT, seed=42)
    counts = split.counts()
    assert [counts[(m, "test")] for m in ("20x", "40x", "60x")] == [3, 4, 6]
    assert random_fields_out(KEYS, REFERENCE_HOLDOUT, seed=42) == split  # seeded: reproducible
    assert random_fields_out(reversed(KEYS), REFERENCE_HOLDOUT, seed=42) == split  # order-independent
    others = [random_fields_out(KEYS, REFERENCE_HOLDOUT, seed=s).keys("test") for s in range(5)]
    assert len({frozenset(t) for t in others}) > 1
    # each magnification draws from its own stream: dropping 60x leaves 20x/40x unchanged
    no60 = random_fields_out([k for k in KEYS if k[0] != "60x"], REFERENCE_HOLDOUT, seed=42)
    assert no60.keys("test") == {k for k in split.keys("test") if k[0] != "60x"}


def test_random_fields_errors():
    with pytest.raises(VstainError, match="cannot hold out 48 of the 48 20x fields"):
        random_fields_out(KEYS, 48, seed=0)
    with pytest.raises(VstainError, match="unknown subset"):
        random_fields_out(KEYS, 1, seed=0).keys("validation")


def test_csv_round_trip(tmp_path: Path):
    split = random_fields_out(KEYS, 2, seed=1)
    path = split.save(tmp_path / "split.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "magnification,well,field,subset"
    assert lines[1].startswith("20x,B03,1,")
    assert Split.load(path) == split
    assert read_split_keys(path, "test") == split.keys("test") and len(split.keys("test")) == 6


def test_csv_accepts_cv7000_field_numbers(tmp_path: Path):
    path = tmp_path / "split.csv"
    path.write_text("subset,well,magnification,field\ntrain,D02,20x,F007\ntest,D02,20x,008\n")
    assert Split.load(path).assignments == {("20x", "D02", 7): "train", ("20x", "D02", 8): "test"}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such split file"),
        ("magnification,well,subset\n20x,D02,train\n", "lacks column\\(s\\) field"),
        ("magnification,well,field,subset\n", "has no rows"),
        ("magnification,well,field,subset\n20x,D02,1,valid\n", ":2: subset 'valid'"),
        ("magnification,well,field,subset\n20x,D02,1,train\n20x,D02,F001,test\n", ":3: 20x D02 F001 is listed twice"),
        ("magnification,well,field,subset\n30x,D02,1,train\n", ":2: unknown magnification '30x'"),
        ("magnification,well,field,subset\n20x,D02,one,train\n", ":2: field 'one'"),
    ],
)
def test_bad_split_files_name_file_and_line(tmp_path: Path, content: str | None, message: str):
    path = tmp_path / "split.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(VstainError, match=message) as info:
        Split.load(path)
    assert str(info.value).startswith(str(path))
