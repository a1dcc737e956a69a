"""Plate indexing: both layouts, masks, brightfield-only fields and every validation failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from plate_files import PLATE_ID, field_files, make_plate

from vstain.errors import PlateError
from vstain.plate.index import index_plate
from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff


def name_of(well: str, field: int, channel: int, z: int = 1, ext: str = ".tif") -> str:
    base = ImageName(plate=PLATE_ID, well=well, field=field, channel=4, action=4)
    return format_name(base.for_channel(channel, z=z)).removesuffix(".tif") + ext


def issues_about(index, path: Path) -> list:
    return [i for i in index.issues if i.path == path]


def test_nested_layout_indexes_every_field(plate: Path):
    index = index_plate(plate)
    assert index.issues == []
    assert [f.key for f in index.fields] == [("20x", "B03", 1), ("20x", "B03", 2), ("20x", "C02", 1), ("20x", "C02", 2)]
    f = index.fields[0]
    assert f.shape == (16, 16)
    assert [p.name for p in f.brightfield] == [name_of("B03", 1, 4, z) for z in range(1, 8)]
    assert list(f.targets) == ["nuclei", "lipids", "cytoplasm"]
    assert f.targets["lipids"].name == name_of("B03", 1, 2)
    stack = f.read_brightfield()
    assert stack.shape == (7, 16, 16) and stack.dtype == np.uint16
    np.testing.assert_array_equal(stack[2], tifffile.imread(f.brightfield[2]))


def test_root_may_be_the_magnification_folder(plate: Path):
    index = index_plate(plate / "20x_images")
    assert index.issues == [] and len(index.fields) == 4
    assert {f.magnification for f in index.fields} == {"20x"}
    with pytest.raises(PlateError, match="folder name says 20x"):
        index_plate(plate / "20x_images", magnification="40x")


def test_several_magnifications_and_selection(tmp_path: Path):
    make_plate(tmp_path / "p", magnification="20x", wells=("B03",), fields=1)
    make_plate(tmp_path / "p", magnification="60x", wells=("D04",), fields=2, shape=(24, 20))
    index = index_plate(tmp_path / "p")
    assert index.magnifications == ["20x", "60x"]
    assert index.issues == []  # sizes are compared per magnification
    assert [f.shape for f in index.select(magnification="60x")] == [(24, 20), (24, 20)]
    only_60x = index_plate(tmp_path / "p", magnification="60x")
    assert [f.key for f in only_60x.fields] == [("60x", "D04", 1), ("60x", "D04", 2)]
    with pytest.raises(PlateError, match="no 40x_images folder"):
        index_plate(tmp_path / "p", magnification="40x")


def test_flat_folder_needs_the_magnification(tmp_path: Path):
    make_plate(tmp_path / "flat", flat=True, wells=("D02",), fields=1)
    with pytest.raises(PlateError, match="give the magnification \\(`magnification`: 20x \\| 40x \\| 60x\\)"):
        index_plate(tmp_path / "flat")
    index = index_plate(tmp_path / "flat", magnification="40x")
    assert index.issues == [] and [f.key for f in index.fields] == [("40x", "D02", 1)]
    with pytest.raises(PlateError, match="unknown magnification '30x'"):
        index_plate(tmp_path / "flat", magnification="30x")


def test_not_a_folder(tmp_path: Path):
    with pytest.raises(PlateError, match="missing: no such folder") as info:
        index_plate(tmp_path / "missing")
    assert isinstance(info.value, FileNotFoundError)
    (tmp_path / "file").write_text("")
    with pytest.raises(PlateError, match="file: not a folder"):
        index_plate(tmp_path / "file")


def test_empty_folder_is_an_error(tmp_path: Path):
    index = index_plate(tmp_path, magnification="20x")
    assert [i.message for i in index.errors] == ["no CV7000 images found"]
    with pytest.raises(PlateError, match="no CV7000 images found"):
        index.raise_for_errors()


@pytest.mark.parametrize("flat", [False, True])
def test_masks_are_found_but_never_indexed_as_images(tmp_path: Path, flat: bool):
    folder = make_plate(tmp_path / "p", wells=("B03",), fields=2, flat=flat)
    mask_dir = tmp_path / "p" / "masks" / "20x_images"
    labels = np.zeros((16, 16), np.uint16)
    labels[4:8, 4:8] = 1
    write_tiff(mask_dir / name_of("B03", 1, 1, ext=".tiff"), labels)
    (mask_dir / "Nuclei").mkdir()
    write_tiff(mask_dir / "Nuclei" / name_of("B03", 1, 1, ext=".tiff"), labels)
    index = index_plate(tmp_path / "p", magnification="20x" if flat else None)
    assert index.issues == []
    assert len(index.fields) == 2
    assert index.fields[0].mask == mask_dir / name_of("B03", 1, 1, ext=".tiff")
    assert index.fields[1].mask is None
    np.testing.assert_array_equal(index.fields[0].read_mask(), labels)
    # the masks also serve when the magnification folder itself is indexed
    if not flat:
        assert index_plate(folder).fields[0].mask is not None


def test_broken_masks_are_reported_and_dropped(plate: Path):
    mask_dir = plate / "masks" / "20x_images"
    wrong_size = mask_dir / name_of("B03", 1, 1, ext=".tiff")
    as_float = mask_dir / name_of("B03", 2, 1, ext=".tiff")
    corrupt = mask_dir / name_of("C02", 1, 1, ext=".tiff")
    write_tiff(wrong_size, np.zeros((8, 8), np.uint16))
    tifffile.imwrite(as_float, np.zeros((16, 16), np.float32))
    corrupt.write_bytes(b"broken")
    index = index_plate(plate)
    assert len(index.issues) == 3
    assert "mask size 8x8 differs from its field's 16x16" in issues_about(index, wrong_size)[0].message
    assert "float32 data" in issues_about(index, as_float)[0].message
    assert "unreadable TIFF" in issues_about(index, corrupt)[0].message
    assert len(index.fields) == 4 and all(f.mask is None for f in index.fields)  # still usable for inference


def test_brightfield_only_fields_are_usable(tmp_path: Path):
    make_plate(tmp_path / "p", targets=(), wells=("B03",), fields=1)
    index = index_plate(tmp_path / "p")
    assert index.issues == []
    (f,) = index.fields
    assert dict(f.targets) == {} and not f.has_targets()
    assert f.read_brightfield().shape == (7, 16, 16)
    assert f.target_filename("cytoplasm") == name_of("B03", 1, 3)
    with pytest.raises(PlateError, match=f"no cytoplasm image \\({name_of('B03', 1, 3)}\\)"):
        f.read_target("cytoplasm")
    assert index.select(with_targets=["nuclei"]) == []


def test_partial_targets(tmp_path: Path):
    make_plate(tmp_path / "p", targets=(1,), wells=("B03",), fields=1)
    (f,) = index_plate(tmp_path / "p").fields
    assert list(f.targets) == ["nuclei"] and f.has_targets(["nuclei"]) and not f.has_targets()


# --- validation: each problem reported exactly once, naming the file -------------------------


def test_missing_plane(plate: Path):
    folder = plate / "20x_images"
    (folder / name_of("B03", 2, 4, z=3)).unlink()
    (folder / name_of("B03", 2, 4, z=6)).unlink()
    index = index_plate(plate)
    (issue,) = index.issues
    assert issue.path == folder / name_of("B03", 2, 4, z=1)
    assert name_of("B03", 2, 4, z=3) in issue.message and name_of("B03", 2, 4, z=6) in issue.message
    assert ("20x", "B03", 2) not in [f.key for f in index.fields] and len(index.fields) == 3


def test_field_without_brightfield(plate: Path):
    folder = plate / "20x_images"
    for z in range(1, 8):
        (folder / name_of("C02", 1, 4, z=z)).unlink()
    index = index_plate(plate)
    (issue,) = index.issues
    assert issue.path == folder / name_of("C02", 1, 1)
    assert "no brightfield (C04) planes" in issue.message


def test_duplicate_tif_and_tiff(plate: Path):
    folder = plate / "20x_images"
    original = folder / name_of("B03", 1, 4, z=2)
    copy = folder / name_of("B03", 1, 4, z=2, ext=".tiff")
    shutil.copy(original, copy)
    index = index_plate(plate)
    (issue,) = index.issues
    assert issue.path == copy and f"duplicate of {original.name}" in issue.message
    assert ("20x", "B03", 1) not in [f.key for f in index.fields]


def test_mixed_sizes(plate: Path):
    folder = plate / "20x_images"
    odd = folder / name_of("C02", 2, 4, z=5)
    write_tiff(odd, np.zeros((16, 18), np.uint16))
    index = index_plate(plate)
    (issue,) = index.issues
    assert issue.path == odd and "size 16x18 differs from the plate's 16x16" in issue.message
    assert len(index.fields) == 3


def test_non_uint16_data(plate: Path):
    folder = plate / "20x_images"
    as_float = folder / name_of("B03", 1, 4, z=4)
    as_byte = folder / name_of("C02", 1, 2)
    tifffile.imwrite(as_float, np.zeros((16, 16), np.float32))
    tifffile.imwrite(as_byte, np.zeros((16, 16), np.uint8))
    index = index_plate(plate)
    assert len(index.issues) == 2
    (float_issue,) = issues_about(index, as_float)
    assert "float32 data" in float_issue.message and "uint16" in float_issue.message
    (byte_issue,) = issues_about(index, as_byte)
    assert "uint8 data" in byte_issue.message
    keys = [f.key for f in index.fields]
    assert ("20x", "B03", 1) not in keys  # a bad brightfield plane loses the field
    c02 = index.fields[keys.index(("20x", "C02", 1))]
    assert "lipids" not in c02.targets and "nuclei" in c02.targets  # a bad target loses only itself


def test_multi_page_or_rgb_is_refused(plate: Path):
    rgb = plate / "20x_images" / name_of("B03", 1, 3)
    tifffile.imwrite(rgb, np.zeros((16, 16, 3), np.uint16), photometric="rgb")
    (issue,) = index_plate(plate).issues
    assert issue.path == rgb and "not a single 2-D plane" in issue.message


def test_corrupt_file(plate: Path):
    folder = plate / "20x_images"
    corrupt = folder / name_of("C02", 2, 4, z=1)
    corrupt.write_bytes(b"II*\x00garbage")
    truncated = folder / name_of("B03", 1, 1)
    truncated.write_bytes(b"")
    index = index_plate(plate)
    assert len(index.issues) == 2
    assert all("unreadable TIFF" in i.message for i in index.issues)
    assert {i.path for i in index.issues} == {corrupt, truncated}
    assert all(str(i).count(str(i.path)) == 1 and "\n" not in str(i) for i in index.issues)


def test_unknown_names(plate: Path):
    folder = plate / "20x_images"
    stray = folder / "overview.tif"
    stray.write_bytes(b"not read")
    channel5 = folder / name_of("B03", 1, 5)
    z2_nuclei = folder / name_of("B03", 1, 1, z=2)
    z9 = folder / name_of("B03", 1, 4, z=9)
    for path in (channel5, z2_nuclei, z9):
        shutil.copy(folder / name_of("B03", 1, 1), path)
    (folder / "notes.txt").write_text("ignored: not an image")
    (folder / "sub").mkdir()
    index = index_plate(plate)
    assert len(index.issues) == 4
    assert "not a CV7000 image name" in issues_about(index, stray)[0].message
    assert "unknown channel C05" in issues_about(index, channel5)[0].message
    assert "plane Z02" in issues_about(index, z2_nuclei)[0].message
    assert "Z09 outside Z01-Z07" in issues_about(index, z9)[0].message
    assert len(index.fields) == 4  # the known files still form valid fields


def test_two_plate_ids_for_one_field(plate: Path):
    folder = plate / "20x_images"
    other = field_files(folder, "B03", 1, rng=np.random.default_rng(1), plate="OtherPlate")
    index = index_plate(plate)
    (issue,) = index.issues
    assert issue.path == other[(4, 1)] and "second 20x B03 F001" in issue.message
    assert len(index.fields) == 4


def test_raise_for_errors_names_the_first_file(plate: Path):
    folder = plate / "20x_images"
    (folder / name_of("B03", 1, 4, z=7)).unlink()
    (folder / name_of("C02", 1, 4, z=7)).unlink()
    with pytest.raises(PlateError, match=r"B03_T0001F001L01A04Z01C04\.tif: .*\(and 1 more problems"):
        index_plate(plate).raise_for_errors()
