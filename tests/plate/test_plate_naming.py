"""CV7000 names: parse/format round trips (property tests) and one-line errors naming the file."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from vstain.errors import InvalidName
from vstain.plate.naming import ImageName, format_name, parse_name

PLATE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_#-. "

plates = st.text(alphabet=PLATE_CHARS, min_size=1, max_size=40)
wells = st.builds(
    lambda row, col: f"{row}{col}",
    st.text(alphabet="ABCDEFGHIJKLMNOPabcdefgh", min_size=1, max_size=2),
    st.integers(0, 999).map(lambda n: f"{n:02d}"),
)
names = st.builds(
    ImageName,
    plate=plates,
    well=wells,
    field=st.integers(0, 999),
    channel=st.integers(0, 99),
    z=st.integers(0, 99),
    action=st.integers(0, 99),
    timepoint=st.integers(0, 9999),
    timeline=st.integers(0, 99),
    extension=st.sampled_from([".tif", ".tiff", ".TIF", ".TIFF"]),
)


def test_parse_reference_example():
    name = parse_name("AssayPlate_Greiner_#655090_D02_T0001F007L01A01Z01C01.tif")
    assert name == ImageName(
        plate="AssayPlate_Greiner_#655090", well="D02", field=7, channel=1, z=1, action=1
    )
    assert name.field_key == ("D02", 7)


@settings(max_examples=300, deadline=None)
@given(names)
def test_parse_inverts_format(name: ImageName):
    assert parse_name(format_name(name)) == name


@settings(max_examples=300, deadline=None)
@given(names)
def test_format_inverts_parse_on_valid_strings(name: ImageName):
    text = format_name(name)
    assert format_name(parse_name(text)) == text


def test_for_channel_gives_the_cv7000_action():
    bf = parse_name("P_D02_T0001F007L01A04Z05C04.tif")
    assert format_name(bf.for_channel(2)) == "P_D02_T0001F007L01A02Z01C02.tif"
    assert format_name(bf.for_channel(4, z=7)) == "P_D02_T0001F007L01A04Z07C04.tif"


@pytest.mark.parametrize(
    "bad",
    [
        "P_D02_T0001F007L01A01Z01C01.png",  # extension
        "P_D02_T001F007L01A01Z01C01.tif",  # T has 3 digits
        "P_D02_T0001F07L01A01Z01C01.tif",  # F has 2 digits
        "P_D02_T0001F007L01A01Z01.tif",  # no channel
        "D02_T0001F007L01A01Z01C01.tif",  # no plate id
        "P_02_T0001F007L01A01Z01C01.tif",  # well without row letter
        "P_D02_T0001F007L01A01Z01C01.tif\n",  # trailing newline
        "P_D02_T0001F\u0667\u0660\u0667L01A01Z01C01.tif",  # non-ASCII digits
        "a/b_D02_T0001F007L01A01Z01C01.tif",  # a path, not a name
        "",
    ],
)
def test_invalid_names_raise_naming_the_file(bad: str):
    with pytest.raises(InvalidName) as info:
        parse_name(bad)
    assert str(info.value).startswith(f"{bad}: ")


@settings(max_examples=200, deadline=None)
@given(names, st.integers(0, 200), st.sampled_from(["", "x", "_", "Z", "9"]))
def test_mutated_names_parse_or_raise_with_the_name(name: ImageName, position: int, insert: str):
    text = format_name(name)
    position = min(position, len(text))
    mutated = text[:position] + insert + text[position + 1 :]
    try:
        parsed = parse_name(mutated)
    except InvalidName as exc:
        assert str(exc).startswith(f"{mutated}: ")
    else:  # the mutation happened to give another valid name: it must still round-trip
        assert format_name(parsed) == mutated


@pytest.mark.parametrize(
    "kwargs, part",
    [
        ({"well": "D"}, "well"),
        ({"field": 1000}, "field"),
        ({"z": -1}, "z"),
        ({"plate": ""}, "plate"),
        ({"plate": "a\nb"}, "plate"),
        ({"extension": ".png"}, "extension"),
    ],
)
def test_image_name_validates_its_parts(kwargs: dict, part: str):
    values = {"plate": "P", "well": "D02", "field": 1, "channel": 1} | kwargs
    with pytest.raises(InvalidName, match=part):
        ImageName(**values)
