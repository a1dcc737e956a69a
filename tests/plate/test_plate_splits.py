"""Splits: leave-wells-out, seeded random fields, the train/validation/test/calibration vocabulary, CSV round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vstain.errors import SplitError, VstainError
from vstain.plate.splits import (
    REFERENCE_HOLDOUT,
    Split,
    leave_wells_out,
    random_fields_out,
    random_split,
    read_split_keys,
)
from vstain.vocabulary import SPLIT_SUBSETS

WELLS = ("B03", "B04", "C02", "C03", "C04", "D02", "D03", "D04")
# the challenge plate: 8 wells with 6 / 8 / 12 fields at 20x / 40x / 60x
KEYS = [(mag, well, f) for mag, n in (("20x", 6), ("40x", 8), ("60x", 12)) for well in WELLS for f in range(1, n + 1)]


def test_leave_one_well_out_like_reference_split_1():
    split = leave_wells_out(KEYS, ["b03"])
    assert split.counts() == {
        ("20x", "train"): 42, ("20x", "validation"): 6,
        ("40x", "train"): 56, ("40x", "validation"): 8,
        ("60x", "train"): 84, ("60x", "validation"): 12,
    }  # fmt: skip
    assert {well for _, well, _ in split.keys("validation")} == {"B03"}
    assert len(split.keys("train")) + len(split.keys("validation")) == len(KEYS)
    assert len(split.keys("validation", magnification="40x")) == 8


def test_leave_wells_out_errors():
    with pytest.raises(VstainError, match="well\\(s\\) H12 not on the plate"):
        leave_wells_out(KEYS, ["B03", "H12"])
    with pytest.raises(VstainError, match="nothing is left to train on"):
        leave_wells_out(KEYS, WELLS)


def test_random_fields_per_magnification_like_the_final_split():
    split = random_fields_out(KEYS, REFERENCE_HOLDOUT, seed=42)
    counts = split.counts()
    assert [counts[(m, "validation")] for m in ("20x", "40x", "60x")] == [3, 4, 6]
    assert random_fields_out(KEYS, REFERENCE_HOLDOUT, seed=42) == split  # seeded: reproducible
    assert random_fields_out(reversed(KEYS), REFERENCE_HOLDOUT, seed=42) == split  # order-independent
    others = [random_fields_out(KEYS, REFERENCE_HOLDOUT, seed=s).keys("validation") for s in range(5)]
    assert len({frozenset(t) for t in others}) > 1
    # each magnification draws from its own stream: dropping 60x leaves 20x/40x unchanged
    no60 = random_fields_out([k for k in KEYS if k[0] != "60x"], REFERENCE_HOLDOUT, seed=42)
    assert no60.keys("validation") == {k for k in split.keys("validation") if k[0] != "60x"}


def test_random_fields_errors():
    with pytest.raises(VstainError, match="cannot hold out 48 of the 48 20x fields"):
        random_fields_out(KEYS, 48, seed=0)
    with pytest.raises(VstainError, match="unknown subset 'valid'"):
        random_fields_out(KEYS, 1, seed=0).keys("valid")


def test_csv_round_trip(tmp_path: Path):
    split = random_fields_out(KEYS, 2, seed=1)
    path = split.save(tmp_path / "split.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "magnification,well,field,subset"
    assert lines[1].startswith("20x,B03,1,")
    assert Split.load(path) == split
    assert read_split_keys(path, "validation") == split.keys("validation") and len(split.keys("validation")) == 6


def test_csv_accepts_cv7000_field_numbers(tmp_path: Path):
    path = tmp_path / "split.csv"
    path.write_text("subset,well,magnification,field\ntrain,D02,20x,F007\nvalidation,D02,20x,008\n")
    assert Split.load(path).assignments == {("20x", "D02", 7): "train", ("20x", "D02", 8): "validation"}


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


def test_every_subset_of_the_vocabulary_round_trips(tmp_path: Path):
    path = tmp_path / "split.csv"
    path.write_text("magnification,well,field,subset\n20x,D02,1,train\n20x,D02,2,validation\n"
                    "20x,D02,3,test\n20x,D02,4,calibration\n")
    split = Split.load(path)
    assert [sorted(split.keys(s)) for s in SPLIT_SUBSETS] == [[("20x", "D02", n)] for n in (1, 2, 3, 4)]
    assert Split.load(split.save(tmp_path / "again.csv")) == split
    path.write_text("magnification,well,field,subset\n20x,D02,1,valid\n")
    with pytest.raises(VstainError, match="'valid' is not one of train, validation, test, calibration"):
        Split.load(path)


def test_random_split_draws_test_then_validation_seeded():
    keys = [("20x", w, f) for w in ("B02", "B03", "B04", "B05") for f in (1, 2)]
    split = random_split(keys, {"test": 2, "validation": 1}, seed=0)
    assert split == random_split(list(reversed(keys)), {"test": 2, "validation": 1}, seed=0)
    counts = split.counts()
    assert counts == {("20x", "train"): 5, ("20x", "test"): 2, ("20x", "validation"): 1}
    # the draw is a permutation of the sorted keys from the stream [seed, 7]: first test, then validation
    order = np.random.default_rng([0, 7]).permutation(len(keys))
    assert split.keys("test") == {sorted(keys)[i] for i in order[:2]}
    assert split.keys("validation") == {sorted(keys)[order[2]]}
    assert any(random_split(keys, {"test": 2, "validation": 1}, seed=s) != split for s in range(1, 6))
    with pytest.raises(VstainError, match="at least 4 fields"):
        random_split(keys[:3], {"test": 2, "validation": 1}, seed=0)
    with pytest.raises(VstainError, match="subset 'train'"):
        random_split(keys, {"train": 1}, seed=0)


def test_training_needs_a_validation_field_and_names_the_old_meaning_of_test():
    old = Split({("20x", "D02", 1): "train", ("20x", "D02", 2): "test"})
    with pytest.raises(SplitError, match="old.csv: no validation field at 20x.*rename test to validation") as info:
        old.check_trainable("20x", source="old.csv")
    assert "\n" not in str(info.value)
    no_validation = Split({("20x", "D02", 1): "train", ("20x", "D02", 2): "calibration"})
    with pytest.raises(SplitError, match="no validation field at 20x; training needs at least one"):
        no_validation.check_trainable("20x")
    with pytest.raises(SplitError, match="no train field at 40x"):
        Split({("40x", "D02", 1): "validation"}).check_trainable("40x")
    good = Split({("20x", "D02", 1): "train", ("20x", "D02", 2): "validation", ("40x", "D02", 1): "train"})
    good.check_trainable("20x")
    with pytest.raises(SplitError, match="no validation field at 40x"):
        good.check_trainable("40x")


def test_fields_that_are_not_on_the_plate_are_named():
    split = Split({("20x", "D02", n): "train" for n in range(1, 9)} | {("60x", "H01", 1): "validation"})
    on_plate = [("20x", "D02", n) for n in (1, 2)]
    with pytest.raises(SplitError, match=r"s.csv: 6 field\(s\) of the split are not on the plate: "
                       r"20x D02 F003, 20x D02 F004, 20x D02 F005, 20x D02 F006, 20x D02 F007 and 1 more$"):
        split.check_fields(on_plate, source="s.csv")  # 60x rows: the plate has no 60x, not checked
    with pytest.raises(SplitError, match="60x H01 F001"):
        split.check_fields([("20x", "D02", n) for n in range(1, 9)], magnifications=["20x", "60x"])
    split.check_fields([("20x", "D02", n) for n in range(1, 9)])
