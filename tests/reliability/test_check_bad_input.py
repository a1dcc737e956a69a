"""`vstain check` on bad plates: truncated pixel data (--deep), unreadable folders (issue 16, items 4 and 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vstain.plate.index import index_plate

PLANE = "AssayPlate_Greiner_#655090_B02_T0001F001L01A04Z03C04.tif"


def _truncate(path: Path) -> None:
    """Cut the pixel data in half; the header (at the start of the file) stays intact."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_deep_check_finds_truncated_pixel_data_the_default_check_cannot(random_plate, cli, snapshot):
    plane = random_plate / "20x_images" / PLANE
    _truncate(plane)
    before = snapshot(random_plate)
    code, out, _ = cli("check", random_plate)
    assert code == 0 and "no problems found" in out  # headers only, as --help says
    code, out, _ = cli("check", random_plate, "--deep")
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(problems) == 1 and str(plane) in problems[0] and "pixel data unreadable" in problems[0]
    assert "3 valid fields" in out  # the other fields of the plate are still listed
    assert snapshot(random_plate) == before  # check never modifies the plate


def test_deep_check_decodes_masks_too(random_plate):
    mask = next((random_plate / "masks" / "20x_images").glob("*.tif"))
    _truncate(mask)
    index = index_plate(random_plate, check_pixels=True)
    assert [i.path for i in index.issues] == [mask]
    assert len(index.fields) == 4  # the field is fine, only its mask is dropped
    assert sum(f.mask is None for f in index.fields) == 1


def test_check_help_says_what_the_default_checks(cli, capsys):
    with pytest.raises(SystemExit):
        cli("check", "--help")
    text = capsys.readouterr().out
    assert "--deep" in text and "TIFF header" in text and "no pixel data" in text


def _deny(monkeypatch, denied: Path) -> None:
    """Make listing ``denied`` fail as it does for a folder without read permission."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_plate_root_is_one_line(random_plate, cli, monkeypatch, one_line_error):
    _deny(monkeypatch, random_plate)
    code, out, err = cli("check", random_plate)
    assert code == 2 and out == ""
    one_line_error(err, random_plate, "Permission denied", "permissions")


def test_unreadable_image_folder_is_an_issue_naming_it(random_plate, cli, monkeypatch):
    folder = random_plate / "20x_images"
    _deny(monkeypatch, folder)
    code, out, err = cli("check", random_plate)
    assert code == 1 and err == ""
    assert f"error: {folder}: cannot list the folder (Permission denied); check its permissions" in out


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_folders_with_real_permissions(random_plate, cli, one_line_error):
    folder = random_plate / "20x_images"
    folder.chmod(0)
    try:
        code, out, _ = cli("check", random_plate)
        assert code == 1 and f"{folder}: cannot list the folder" in out
    finally:
        folder.chmod(0o755)
    random_plate.chmod(0)
    try:
        code, _, err = cli("check", random_plate)
        assert code == 2
        one_line_error(err, random_plate, "permissions")
    finally:
        random_plate.chmod(0o755)
