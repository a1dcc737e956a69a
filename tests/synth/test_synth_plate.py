"""generate_plate and `vstain synth`: real names, masks, manifest, determinism, refusal to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vstain.cli import main
from vstain.errors import ConfigError, PlateError
from vstain.plate import index_plate, parse_name, read_tiff
from vstain.synth import DEFAULT_PLATE_ID, generate_plate, well_names

SIZE = (96, 112)


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plate")
    generate_plate(root, magnification="20x", wells=2, fields=2, seed=5, size=SIZE)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_well_names_walk_the_inner_wells():
    assert well_names(3) == ["B02", "B03", "B04"]
    assert well_names(11)[-2:] == ["B11", "C02"]
    with pytest.raises(ConfigError, match="`wells`: 0 is out of range"):
        well_names(0)


def test_plate_has_the_real_file_names(plate):
    names = sorted(p.name for p in (plate / "20x_images").iterdir())
    assert len(names) == 2 * 2 * 10
    assert "AssayPlate_Greiner_#655090_B02_T0001F001L01A01Z01C01.tif" in names
    assert "AssayPlate_Greiner_#655090_B02_T0001F001L01A02Z01C02.tif" in names
    assert "AssayPlate_Greiner_#655090_B02_T0001F001L01A03Z01C03.tif" in names
    for z in range(1, 8):
        assert f"AssayPlate_Greiner_#655090_B03_T0001F002L01A04Z{z:02d}C04.tif" in names
    parsed = [parse_name(n) for n in names]
    assert {p.well for p in parsed} == {"B02", "B03"} and {p.field for p in parsed} == {1, 2}
    masks = sorted(p.name for p in (plate / "masks" / "20x_images").iterdir())
    assert masks == sorted(n for n in names if n.endswith("C01.tif"))


def test_index_plate_accepts_the_plate_with_targets_and_masks(plate):
    index = index_plate(plate)
    assert index.issues == []
    assert len(index.fields) == 4
    for field in index.fields:
        assert field.plate == DEFAULT_PLATE_ID and field.magnification == "20x"
        assert set(field.targets) == {"nuclei", "lipids", "cytoplasm"}
        assert field.mask is not None and field.shape == SIZE
        stack = field.read_brightfield()
        assert stack.shape == (7, *SIZE) and stack.dtype == np.uint16
        mask = field.read_mask()
        assert mask.dtype == np.uint16
        if mask.max():
            nuclei = field.read_target("nuclei").astype(float)
            assert nuclei[mask > 0].mean() > 2 * nuclei[mask == 0].mean()


def test_manifest_records_seed_parameters_and_shifts(plate):
    manifest = json.loads((plate / "plate.json").read_text())
    assert manifest["seed"] == 5 and manifest["plate_id"] == DEFAULT_PLATE_ID
    assert manifest["preset"] == "reference" and manifest["randomize_seed"] is None
    assert manifest["size"] == {"20x": list(SIZE)}
    assert manifest["parameters"]["20x"]["pixel_size_um"] == 0.325
    assert len(manifest["fields"]) == 4
    for entry in manifest["fields"]:
        assert len(entry["files"]) == 10 and all((plate / f).is_file() for f in entry["files"])
        # Default plates are aligned: every stain at [0, 0], no scale difference.
        assert entry["shift_px"] == {"C01": [0.0, 0.0], "C02": [0.0, 0.0], "C03": [0.0, 0.0]}
        assert entry["shift_scale"] == 0.0
        mask = read_tiff(plate / entry["mask"])
        assert mask.max() == entry["n_nuclei"]


def test_same_seed_gives_byte_identical_plates_and_fields_do_not_depend_on_plate_size(plate, tmp_path):
    again = tmp_path / "again"
    generate_plate(again, magnification="20x", wells=2, fields=2, seed=5, size=SIZE)
    assert _tree(again) == _tree(plate)
    smaller = tmp_path / "smaller"
    generate_plate(smaller, magnification="20x", wells=1, fields=1, seed=5, size=SIZE)
    for name, data in _tree(smaller).items():
        if name.endswith(".tif"):
            assert data == (plate / name).read_bytes()
    other = tmp_path / "other"
    generate_plate(other, magnification="20x", wells=1, fields=1, seed=6, size=SIZE)
    name = "20x_images/AssayPlate_Greiner_#655090_B02_T0001F001L01A04Z01C04.tif"
    assert (other / name).read_bytes() != (plate / name).read_bytes()


def test_refuses_to_write_over_a_plate_unless_asked(tmp_path):
    root = tmp_path / "p"
    generate_plate(root, wells=2, fields=1, seed=0, size=(32, 32))
    before = _tree(root)
    with pytest.raises(PlateError, match="already holds a plate"):
        generate_plate(root, wells=1, fields=1, seed=1, size=(32, 32))
    assert _tree(root) == before
    generate_plate(root, wells=1, fields=1, seed=1, size=(32, 32), overwrite=True)
    # The old plate's files are gone, not mixed with the new one.
    assert len(list((root / "20x_images").iterdir())) == 10
    assert index_plate(root).issues == []


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--magnification", "20x", "40x", "--wells", "1", "--fields", "1",
                 "--seed", "2", "--size", "64x80", "--plate-id", "Test_655090", "--preview"])
    assert code == 0
    assert "wrote 2 fields" in capsys.readouterr().out
    index = index_plate(out)
    assert index.issues == [] and index.magnifications == ["20x", "40x"]
    assert all(f.plate == "Test_655090" and f.shape == (64, 80) for f in index.fields)
    for mag in ("20x", "40x"):
        png = out / f"preview_{mag}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["synth", "--out", str(out), "--size", "64"]) == 2
    assert "already holds a plate; choose another --out or pass --overwrite" in capsys.readouterr().err


def test_cli_rejects_a_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "x"), "--size", "big"])
    assert exit_info.value.code == 2
    assert "must look like 512x640" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--fields", "0"]) == 2
    assert "--fields: 0 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
