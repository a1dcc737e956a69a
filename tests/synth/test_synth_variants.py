"""Each preset really changes what it says, measured on tiny fields against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vstain.synth import SynthParameters, render_field
from vstain.synth.optics import illumination, tilt

SIZE = (192, 192)


def render(preset: str, seed: int, *, noise: bool = True, magnification: str = "20x", size=SIZE, **overrides):
    params = SynthParameters.for_magnification(magnification, preset=preset, **overrides)
    return render_field(magnification=magnification, seed=seed, size=size, params=params, camera_noise=noise), params


def cell_body_stats(field, params) -> tuple[np.ndarray, np.ndarray]:
    """C03 over the cell body (off droplets and nuclei), and C03 inside the nuclei."""
    c03 = field.targets["cytoplasm"].astype(float)
    lipids = field.targets["lipids"].astype(float)
    holes = (lipids > params.lipids_background + 0.3 * params.lipid_counts) | ndimage.binary_dilation(
        field.labels > 0, iterations=2)
    return c03[~holes], c03[ndimage.binary_erosion(field.labels > 0, iterations=3)]


def test_bright_cytoplasm_is_bright_almost_everywhere_with_dark_holes():
    cv, holes, means = {}, {}, {}
    for preset in ("reference", "bright-cytoplasm"):
        for seed in (5, 9):
            field, p = render(preset, seed)
            body, nuclei = cell_body_stats(field, p)
            assert len(nuclei)
            c03 = field.targets["cytoplasm"].astype(float)
            cv.setdefault(preset, []).append(body.std() / body.mean())
            holes.setdefault(preset, []).append(np.median(nuclei) / np.median(body))
            means.setdefault(preset, []).append(c03.mean())
            if preset == "bright-cytoplasm":
                # Most of the field is at least half the full cell level above the (moderate) background...
                assert np.mean(c03 > p.cytoplasm_background + 0.5 * p.cytoplasm_counts) > 0.75
                # ...the cell body is evenly filled, well above background even at its 10th percentile...
                assert np.median(body) > p.cytoplasm_background + 0.8 * p.cytoplasm_counts
                assert np.percentile(body, 10) > p.cytoplasm_background + 0.6 * p.cytoplasm_counts
                # ...and the nuclei are dark holes in it.
                assert np.median(nuclei) < 0.6 * np.median(body)
    # Against the reference's dome-shaped cells (measured: cv 0.11 vs 0.30-0.33, holes 0.47 vs 0.74-0.85).
    assert np.mean(cv["bright-cytoplasm"]) < 0.6 * np.mean(cv["reference"])
    assert np.mean(holes["bright-cytoplasm"]) < np.mean(holes["reference"]) - 0.15
    assert np.mean(means["bright-cytoplasm"]) > 1.5 * np.mean(means["reference"])


def nucleus_visibility(preset: str, seed: int) -> np.ndarray:
    """Per plane: mean |brightfield - the same field with optically invisible nuclei| over the
    nuclei, relative to the mean light (noise-free renders of the same specimen)."""
    field, _ = render(preset, seed, noise=False)
    blank, _ = render(preset, seed, noise=False, nucleus_index_step=0.0, nucleus_absorption_per_um=0.0)
    inside = field.labels > 0
    assert inside.any()
    return np.array([
        np.abs(field.brightfield[z].astype(float) - blank.brightfield[z])[inside].mean() / blank.brightfield[z].mean()
        for z in range(7)
    ])


def test_faint_nuclei_have_much_lower_brightfield_contrast():
    reference = nucleus_visibility("reference", 9)
    faint = nucleus_visibility("faint-nuclei", 9)
    # Measured: ~2.5% of the light in the outer planes for the reference, ~0.4% for faint nuclei.
    assert np.all(faint < 0.35 * reference)
    assert reference[0] > 0.015 and 0.001 < faint[0] < 0.008  # faint, but still there in Z01
    assert faint[0] > faint[3]  # most visible out of focus, as grey ellipses


def test_droplet_density_presets():
    counts = {p: sum(render(p, seed)[0].counts["n_droplets_in_view"] for seed in (2, 5, 9))
              for p in ("dense-small-droplets", "reference", "sparse-large-droplets")}
    # Measured: 200, 75 and 1 droplets in three 192x192 crops.
    assert counts["dense-small-droplets"] > 2 * counts["reference"]
    assert counts["reference"] > 10 * counts["sparse-large-droplets"]


def test_a_lone_cell_or_an_empty_area_renders():
    """Clumps and tiny fields can leave one cell or none on the canvas (no Voronoi neighbour)."""
    import dataclasses as dc

    from vstain.synth.layout import random_layout
    from vstain.synth.specimen import render_specimen

    params = SynthParameters.for_magnification("20x", cell_dropout=0.9, undifferentiated_fraction=0.0)
    # Seed 97: one adipocyte, centred inside the 30 µm canvas.
    layout = random_layout(np.random.default_rng(97), (30.0, 30.0), params)
    assert layout.n_cells == 1 and len(layout.droplet_radius) > 0
    specimen = render_specimen(layout, (92, 92), params, np.random.default_rng(0))
    assert specimen.cytoplasm_thickness.max() > 0 and specimen.droplet_thickness.max() > 0
    empty = SynthParameters.for_magnification("60x", cell_dropout=1.0)
    field = render_field(magnification="60x", seed=1, size=(32, 32), params=empty)
    assert field.n_nuclei == 0
    assert field.targets["cytoplasm"].mean() == pytest.approx(empty.cytoplasm_background, rel=0.1)
    assert dc.replace(empty, cell_dropout=0.5).cell_dropout == 0.5


def test_rim_droplets_are_rings_and_reference_droplets_are_filled():
    reference, _ = render("reference", 9, noise=False)
    rim, _ = render("rim-droplets", 9, noise=False)
    lipids = reference.targets["lipids"].astype(float)
    droplets = lipids > np.percentile(lipids, 85)
    core = ndimage.binary_erosion(droplets, iterations=4)
    edge = droplets & ~ndimage.binary_erosion(droplets, iterations=2)
    assert core.any()
    ref, ring = reference.targets["lipids"].astype(float), rim.targets["lipids"].astype(float)
    assert ref[core].mean() > ref[edge].mean()
    assert ring[core].mean() < ring[edge].mean()


def test_speckled_nuclei_have_coarser_chromatin():
    cv = {}
    for preset in ("reference", "speckled-nuclei"):
        field, _ = render(preset, 9, noise=False)
        nuclei = field.targets["nuclei"].astype(float)[ndimage.binary_erosion(field.labels > 0, iterations=3)]
        cv[preset] = nuclei.std() / nuclei.mean()
    assert cv["speckled-nuclei"] > 1.4 * cv["reference"]


def test_dim_noisy_plate_is_dimmer_and_noisier():
    result = {}
    for preset in ("reference", "dim-noisy"):
        noisy, _ = render(preset, 5)
        clean, _ = render(preset, 5, noise=False)
        plane = clean.brightfield[3].astype(float)
        result[preset] = (plane.mean(), (noisy.brightfield[3] - plane).std() / plane.mean())
    assert result["dim-noisy"][0] < 0.45 * result["reference"][0]
    assert result["dim-noisy"][1] > 2 * result["reference"][1]


def test_clumped_culture_leaves_empty_areas():
    assert SynthParameters.for_magnification("20x", preset="clumped").cell_arrangement == "clumps"
    empty = {}
    for preset in ("reference", "clumped"):
        fractions = []
        for seed in (1, 5, 7, 9):
            # Clumps smaller than the preset's 120 µm, so that tiny 83 µm crops see their edges.
            field, p = render(preset, seed, size=(256, 256), clump_size_um=80.0)
            c03 = field.targets["cytoplasm"].astype(float)
            fractions.append(np.mean(c03 < p.cytoplasm_background + 0.1 * p.cytoplasm_counts))
        empty[preset] = np.mean(fractions)
    assert empty["clumped"] > 0.2 and empty["clumped"] > 4 * empty["reference"]


def test_defocused_stack_is_offset_and_wider():
    reference, p = render("reference", 3, size=(32, 32))
    defocused, q = render("defocused", 3, size=(32, 32))
    assert np.diff(defocused.defocus_um).mean() == pytest.approx(1.5 * np.diff(reference.defocus_um).mean())
    assert q.focus_offset_um == 2.0 and abs(defocused.defocus_um[3] - 2.0) < 4 * q.focus_jitter_um
    assert SynthParameters.for_magnification("60x", preset="defocused").focus_offset_um == 1.0


def test_tilt_is_linear_along_its_direction_and_differs_per_channel():
    full = (101, 201)
    ramp = tilt(full, full_shape=full, gradient=0.3, angle_deg=0.0)
    diagonal = np.hypot(*full)
    assert ramp[50, 100] == pytest.approx(1.0)
    assert ramp[0, 200] == pytest.approx(1 + 0.3 * 100 / diagonal, rel=1e-6)  # towards +x: brighter
    assert ramp[0, 0] == pytest.approx(1 - 0.3 * 100 / diagonal, rel=1e-6)
    down = tilt(full, full_shape=full, gradient=0.3, angle_deg=90.0)
    assert down[100, 100] == pytest.approx(1 + 0.3 * 50 / diagonal, rel=1e-5) and down[0, 7] < 1
    light = illumination(full, full_shape=full, vignetting_strength=0.0, gradient=0.0, angle_deg=0.0)
    assert np.all(light == 1.0)
    # A field rendered with opposite tilts in C01 and C02 has its stains brighter on opposite sides.
    field, p = render("reference", 5, noise=False, size=(64, 256), vignetting=0.0, nuclei_background=0.0,
                      stain_gradient=(0.0, 1.0, 1.0), stain_gradient_angle_deg=(0.0, 0.0, 180.0))
    flat, _ = render("reference", 5, noise=False, size=(64, 256), vignetting=0.0, nuclei_background=0.0)
    for target, sign in (("lipids", 1), ("cytoplasm", -1)):
        background = getattr(p, f"{target}_background")
        tilted = field.targets[target].astype(float) - background + 1
        ratio = tilted / (flat.targets[target].astype(float) - background + 1)
        signal = flat.targets[target] > background + 100
        left = np.median(ratio[:, :64][signal[:, :64]])
        right = np.median(ratio[:, -64:][signal[:, -64:]])
        # 1.0 × 192 px / 3341 px (the 20x diagonal) = 0.057 between the two ends
        assert 0.04 < sign * (right - left) < 0.07, target
    assert np.array_equal(field.targets["nuclei"], flat.targets["nuclei"])
