"""Presets, seeded randomisation, parameter checks and the CLI that exposes them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from vstain.cli import main
from vstain.errors import ConfigError
from vstain.synth import PRESETS, VARIATIONS, SynthParameters, generate_plate, randomized_parameters
from vstain.synth.fluorescence import typical_nucleus_level
from vstain.synth.parameters import SynthParameterError, reference_value
from vstain.synth.presets import preset_overrides
from vstain.synth.randomize import MAX_SHIFT_RANGE_PX
from vstain.vocabulary import MAGNIFICATIONS, PIXEL_SIZE_UM

SUGGESTED = {"reference", "faint-nuclei", "bright-cytoplasm", "dense-small-droplets", "sparse-large-droplets",
             "dim-noisy", "defocused", "shifted"}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("magnification", MAGNIFICATIONS)
def test_every_preset_resolves_at_every_magnification(magnification):
    assert SUGGESTED <= set(PRESETS)
    reference = SynthParameters.for_magnification(magnification)
    assert SynthParameters.for_magnification(magnification, preset="reference") == reference
    for name, preset in PRESETS.items():
        params = SynthParameters.for_magnification(magnification, preset=name)
        assert params.magnification == magnification and params.pixel_size_um == PIXEL_SIZE_UM[magnification]
        assert preset.description
        if name != "reference":
            assert params != reference, name
        for key, factor in preset.scale.items():  # magnification-aware: a factor on this magnification's value
            ref = reference_value(key, magnification)
            got = getattr(params, key)
            assert got == (tuple(factor * v for v in ref) if isinstance(ref, tuple) else pytest.approx(factor * ref))


def test_presets_scale_levels_per_magnification_and_overrides_come_last():
    dim20 = SynthParameters.for_magnification("20x", preset="dim-noisy")
    dim60 = SynthParameters.for_magnification("60x", preset="dim-noisy")
    assert dim20.brightfield_counts == pytest.approx(0.35 * 2760.0)
    assert dim60.brightfield_counts == pytest.approx(0.35 * 553.0)
    params = SynthParameters.for_magnification("40x", preset="dim-noisy", gain=1.5, shift_px=[1, 2])
    assert params.gain == 1.5 and params.shift_px == (1, 2)


def test_unknown_preset_is_one_line_listing_the_names(capsys, tmp_path):
    with pytest.raises(ConfigError) as info:
        SynthParameters.for_magnification("20x", preset="fancy")
    message = str(info.value)
    assert "\n" not in message and "unknown preset 'fancy'" in message
    assert all(name in message for name in PRESETS)
    with pytest.raises(SynthParameterError):
        preset_overrides("fancy", "20x")
    assert main(["synth", "--out", str(tmp_path / "x"), "--preset", "fancy", "--size", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown preset 'fancy'; choose one of: reference, faint-nuclei")
    assert len(err.splitlines()) == 1 and not (tmp_path / "x").exists()


def test_parameter_checks_name_the_field():
    with pytest.raises(SynthParameterError, match="unknown synth parameter"):
        SynthParameters.for_magnification("40x", nucleus_colour=1)
    with pytest.raises(SynthParameterError, match="cell_arrangement = 'grid': choose one of lattice, clumps"):
        SynthParameters.for_magnification("20x", cell_arrangement="grid")
    with pytest.raises(SynthParameterError, match="cytoplasm_fill = 1.5: must lie in"):
        SynthParameters.for_magnification("20x", cytoplasm_fill=1.5)
    with pytest.raises(SynthParameterError, match="gain = 'high': must be a number"):
        SynthParameters.for_magnification("20x", gain="high")
    with pytest.raises(SynthParameterError, match="stain_gradient"):
        SynthParameters.for_magnification("20x", stain_gradient=(0.1, 0.2))
    with pytest.raises(SynthParameterError, match="droplet_radius_um"):
        SynthParameters.for_magnification("20x", droplet_radius_um=(5.0, 2.0))


def test_parameters_round_trip_through_json():
    for name in PRESETS:
        params = SynthParameters.for_magnification("60x", preset=name)
        again = SynthParameters.from_dict(json.loads(json.dumps(params.to_dict())))
        assert again == params


def test_randomisation_is_deterministic_and_per_magnification():
    assert randomized_parameters("20x", 7) == randomized_parameters("20x", 7)
    assert randomized_parameters("20x", 7) != randomized_parameters("20x", 8)
    assert randomized_parameters("20x", 7).nucleus_index_step != randomized_parameters("40x", 7).nucleus_index_step


def test_randomisation_varies_every_documented_parameter_within_its_range():
    draws = {mag: [randomized_parameters(mag, seed) for seed in range(40)] for mag in MAGNIFICATIONS}
    reference_params = {mag: SynthParameters.for_magnification(mag) for mag in MAGNIFICATIONS}
    for variation in VARIATIONS:
        for mag, params_list in draws.items():
            values = []
            for params in params_list:
                value = getattr(params, variation.name)
                if variation.element is not None:
                    value = value[variation.element]
                values.append(value)
            assert len({json.dumps(v) for v in values}) > 1, (variation.name, mag)  # really varied
            if variation.choices:
                assert all(v in variation.choices for v in values), variation.name
                continue
            reference = reference_value(variation.name, mag)
            if variation.element is not None and variation.relative:
                reference = reference[variation.element]
            for params, value in zip(params_list, values):
                if variation.name == "focus_offset_um":  # in reference z-steps
                    value = value / reference_value("plane_step_um", mag)
                elif variation.name == "nucleus_counts":  # drawn as a typical nucleus's level
                    value = typical_nucleus_level(params) / typical_nucleus_level(reference_params[mag])
                elif variation.relative:  # a factor on the reference (both ends of a pair)
                    value = value[0] / reference[0] if isinstance(value, tuple) else value / reference
                assert variation.low - 1e-6 <= value <= variation.high + 1e-6, (variation.name, mag, value)
    shifts = [max(abs(v) for v in (*p.shift_px, *p.shift_site_px)) for p in draws["20x"]]
    assert 0.5 < max(shifts) <= MAX_SHIFT_RANGE_PX[1] and min(shifts) < 1.0
    aligned = randomized_parameters("20x", 3, max_shift_px=0)
    assert aligned.shift_px == (0.0, 0.0) and aligned.shift_scale == 0.0
    assert dataclasses.replace(aligned, **{k: getattr(randomized_parameters("20x", 3), k)
                                           for k in aligned.to_dict() if k.startswith("shift")}) \
        == randomized_parameters("20x", 3)


def test_random_variants_render_at_every_magnification():
    from vstain.synth import render_field

    for mag in MAGNIFICATIONS:
        for seed in (0, 1):
            field = render_field(magnification=mag, seed=seed, size=(48, 64), params=randomized_parameters(mag, seed))
            assert field.brightfield.shape == (7, 48, 64)
            assert all(0 < image.mean() < 65535 for image in field.targets.values())


def test_preset_and_random_plates_are_byte_identical_per_seed_and_recorded(tmp_path):
    for name, kwargs in (("p", dict(preset="shifted")), ("r", dict(randomize=11, max_shift_px=3.0))):
        first, second = tmp_path / f"{name}1", tmp_path / f"{name}2"
        generate_plate(first, wells=1, fields=2, seed=4, size=(40, 48), **kwargs)
        generate_plate(second, wells=1, fields=2, seed=4, size=(40, 48), **kwargs)
        assert _tree(first) == _tree(second)
        manifest = json.loads((first / "plate.json").read_text())
        assert manifest["preset"] == kwargs.get("preset") and manifest["randomize_seed"] == kwargs.get("randomize")
        resolved = SynthParameters.from_dict(manifest["parameters"]["20x"])
        if "randomize" in kwargs:
            assert resolved.cell_jitter == randomized_parameters("20x", 11).cell_jitter
            assert max(abs(v) for v in resolved.shift_px) <= 3.0
        else:
            assert resolved == SynthParameters.for_magnification("20x", preset="shifted")
    other = tmp_path / "r3"
    generate_plate(other, wells=1, fields=2, seed=5, size=(40, 48), randomize=11, max_shift_px=3.0)
    assert json.loads((other / "plate.json").read_text())["parameters"] == \
        json.loads((tmp_path / "r1" / "plate.json").read_text())["parameters"]  # image seed != variant seed
    with pytest.raises(ConfigError, match="either `preset` or `randomize`"):
        generate_plate(tmp_path / "both", preset="shifted", randomize=1, size=(16, 16))


def test_invalid_variant_leaves_an_existing_plate_alone(tmp_path):
    root = tmp_path / "keep"
    generate_plate(root, wells=1, fields=1, seed=0, size=(24, 24))
    before = _tree(root)
    with pytest.raises(ConfigError):
        generate_plate(root, wells=1, fields=1, size=(24, 24), preset="nope", overwrite=True)
    assert _tree(root) == before


def test_cli_presets_randomize_and_gallery(tmp_path, capsys):
    assert main(["synth", "--list-presets"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == list(PRESETS)
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--preset", "faint-nuclei", "--wells", "1", "--fields", "1",
                 "--size", "32x40", "--magnification", "20x", "60x"]) == 0
    manifest = json.loads((out / "plate.json").read_text())
    assert manifest["preset"] == "faint-nuclei"
    assert manifest["parameters"]["60x"]["nucleus_index_step"] == 0.0015
    random_out = tmp_path / "random"
    assert main(["synth", "--out", str(random_out), "--randomize", "5", "--max-shift", "2.5", "--wells", "1",
                 "--fields", "2", "--size", "32"]) == 0
    manifest = json.loads((random_out / "plate.json").read_text())
    assert manifest["randomize_seed"] == 5 and manifest["preset"] is None and manifest["max_shift_px"] == 2.5
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "y"), "--preset", "shifted", "--randomize", "1"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["synth", "--wells", "1"]) == 2
    assert "error: --out is required to write a plate" in capsys.readouterr().err
    png = tmp_path / "gallery.png"
    assert main(["synth", "--gallery", str(png), "--preset", "bright-cytoplasm", "--size", "48"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as image:
        assert image.mode == "L" and image.height < image.width  # two rows: reference and the preset
    assert np.asarray(Image.open(png)).std() > 10


def test_gradients_must_leave_the_field_lit():
    assert SynthParameters.for_magnification("20x", brightfield_gradient=1.9).brightfield_gradient == 1.9
    with pytest.raises(SynthParameterError, match="brightfield_gradient = 2.0: must be below 2"):
        SynthParameters.for_magnification("20x", brightfield_gradient=2.0)
    with pytest.raises(SynthParameterError, match="stain_gradient"):
        SynthParameters.for_magnification("20x", stain_gradient=(0.0, 2.5, 0.0))


def test_cli_names_its_own_flags_in_errors(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--max-shift", "40", "--size", "16"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-shift: 40.0 is out of range; use 0 to 16 px"
    assert not (tmp_path / "x").exists()
