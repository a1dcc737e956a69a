"""The lipid branch end to end on small synthetic Bodipy fields."""

from __future__ import annotations

import numpy as np
import pytest

from vstain.evaluation.droplets import measure_droplet_branch, measure_lipid_branch
from vstain.evaluation.settings import pipeline_settings

SHAPE = (256, 256)


def _bodipy(droplets, *, radius: float, pits=(), seed: int = 0) -> np.ndarray:
    """uint16 Bodipy-like field: dome-shaped droplets on a noisy background; pits are dark holes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    image = np.full(SHAPE, 400.0)
    for y, x in droplets:
        image += 2500 * np.sqrt(np.clip(1 - ((yy - y) ** 2 + (xx - x) ** 2) / radius**2, 0, None))
    for y, x in pits:
        image -= 1800 * (((yy - y - 3) ** 2 + (xx - x + 2) ** 2) <= 2.5**2)
    image += rng.normal(0, 20, SHAPE)
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


GRID = [(float(y), float(x)) for y in range(30, 236, 40) for x in range(30, 236, 40)]
CUT_BY_BORDER = [(0.0, 100.0), (150.0, 255.0)]


@pytest.mark.parametrize("magnification", ["20x", "40x", "60x"])
def test_finds_each_separated_droplet_once_and_drops_those_on_the_border(magnification):
    raw = _bodipy(GRID + CUT_BY_BORDER, radius=5)
    branch = measure_lipid_branch(raw / 65535, magnification=magnification)
    assert branch.count == len(GRID) == 36
    assert set(np.unique(branch.labels)) == set(range(branch.count + 1))
    at_centres = {int(branch.labels[int(y), int(x)]) for y, x in GRID}
    assert at_centres == set(range(1, 37))  # one object per droplet
    areas = np.bincount(branch.labels.ravel())[1:]
    assert np.all((areas > np.pi * 4**2) & (areas < np.pi * 7**2))
    assert branch.labels[0, 100] == 0 and branch.labels[150, 255] == 0
    assert branch.warnings == []


def test_droplets_with_a_dark_defect_are_counted_defective():
    centres = [(float(y), float(x)) for y in (50, 128, 206) for x in (50, 128, 206)]
    pitted = centres[::2]
    branch = measure_lipid_branch(_bodipy(centres, radius=12, pits=pitted, seed=1) / 65535, magnification="20x")
    assert branch.count == 9
    limit = pipeline_settings("20x").droplets.defective_min_integrated_intensity
    defective = {int(branch.labels[int(y), int(x)]) for y, x in pitted}
    integrated = branch.defect_integrated_intensity
    assert {k + 1 for k in np.flatnonzero(integrated >= limit)} == defective
    assert branch.defective_count == len(pitted) == 5
    assert 0 <= branch.defect_image.min() and branch.defect_image.max() == pytest.approx(1.0)


def test_blank_field_gives_no_droplets_and_says_why():
    branch = measure_lipid_branch(np.zeros(SHAPE), magnification="20x")
    assert branch.count == 0 and branch.defective_count == 0
    assert branch.defect_integrated_intensity.shape == (0,)
    assert any("constant image" in note for note in branch.warnings)
    assert list(branch.granularity) == [f"Granularity_{i}_Bodipy" for i in range(1, 17)]


def test_pipeline_entry_point_returns_the_same_branch():
    raw = _bodipy(GRID[:6], radius=5, seed=2)
    branch = measure_lipid_branch(raw / 65535, magnification="20x", semantics="cp5")
    notes: list[str] = ["earlier note"]
    same = measure_droplet_branch(raw / 65535, settings=pipeline_settings("20x"), semantics="cp5", warnings=notes)
    np.testing.assert_array_equal(same.lipid_labels, branch.labels)
    np.testing.assert_array_equal(same.defect_image, branch.defect_image)
    assert same.defective_count == branch.defective_count
    assert same.granularity == {i: branch.granularity[f"Granularity_{i}_Bodipy"] for i in range(1, 17)}
    assert notes == ["earlier note"]


def test_rejects_a_stack():
    with pytest.raises(ValueError, match="2-D"):
        measure_lipid_branch(np.zeros((2, 8, 8)), magnification="20x")
