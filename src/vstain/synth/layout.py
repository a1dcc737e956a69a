"""Where the cells, nuclei and lipid droplets of a synthetic adipocyte culture sit (in µm).

Cells tile the well on a jittered hexagonal lattice with a few gaps (or, with
``cell_arrangement="clumps"``, only where a smooth random field is high: islands of cells with
empty areas between them); each owns the part of the plane closer to it than to any other cell
(a Voronoi cell), cut to its own radius. Every cell has
one elliptical nucleus; differentiated cells (adipocytes) fill their cytoplasm with
non-overlapping lipid droplets, from a few large ones to many small ones. The nucleus is pushed
off centre as it is in real adipocytes, but never onto a neighbour's nucleus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.spatial import cKDTree

from vstain.synth.parameters import SynthParameters
from vstain.synth.raster import periodic_noise


@dataclass(frozen=True)
class Layout:
    """Object geometry in micrometres, ``(row, col)`` order; index ``i`` is cell ``i``."""

    cell_center: np.ndarray  #: (N, 2)
    cell_radius: np.ndarray  #: (N,)
    cell_thickness: np.ndarray  #: (N,) cytoplasm height at the cell centre
    cytoplasm_brightness: np.ndarray  #: (N,) relative CellTracker loading
    differentiated: np.ndarray  #: (N,) bool
    nucleus_center: np.ndarray  #: (N, 2)
    nucleus_semi_axes: np.ndarray  #: (N, 2) major, minor
    nucleus_angle: np.ndarray  #: (N,) radians
    nucleus_brightness: np.ndarray  #: (N,) relative Hoechst intensity
    nucleolus_center: np.ndarray  #: (M, 2)
    nucleolus_radius: np.ndarray  #: (M,)
    droplet_center: np.ndarray  #: (K, 2)
    droplet_radius: np.ndarray  #: (K,)
    droplet_owner: np.ndarray  #: (K,) cell index
    debris_center: np.ndarray  #: (D, 2)
    debris_radius: np.ndarray  #: (D,)
    chromocenter_center: np.ndarray  #: (S, 2) bright heterochromatin foci
    chromocenter_radius: np.ndarray  #: (S,)

    @property
    def n_cells(self) -> int:
        return len(self.cell_center)


def random_layout(rng: np.random.Generator, extent_um: tuple[float, float], params: SynthParameters) -> Layout:
    """Draw a culture covering ``extent_um`` (rows, cols) and one lattice pitch around it."""
    pitch = rng.uniform(*params.cell_spacing_um)
    centers = _lattice(rng, extent_um, pitch, params)
    n = len(centers)
    radius = pitch * rng.uniform(*params.cell_radius_fraction, n)
    differentiated = rng.random(n) >= params.undifferentiated_fraction
    thickness = rng.uniform(*params.cytoplasm_thickness_um, n)
    brightness = rng.lognormal(0.0, params.cytoplasm_loading_sigma, n)

    major = rng.uniform(*params.nucleus_diameter_um, n) / 2
    minor = major * rng.uniform(*params.nucleus_aspect, n)
    # Pre-adipocytes are fibroblast-like: flatter, more elongated nuclei.
    minor = np.where(differentiated, minor, major * rng.uniform(0.55, 0.75, n))
    angle = rng.uniform(0, np.pi, n)
    push = params.nucleus_offset_fraction * pitch * np.sqrt(rng.random(n))
    push = np.where(differentiated, push, 0.3 * push)
    direction = rng.uniform(0, 2 * np.pi, n)
    nucleus = centers + push[:, None] * np.stack([np.sin(direction), np.cos(direction)], axis=1)
    nucleus = _separate_nuclei(nucleus, centers, major)
    nucleus_brightness = rng.normal(1.0, 0.08, n).clip(0.8, 1.2)
    condensed = rng.random(n) < params.bright_nucleus_fraction
    nucleus_brightness = np.where(condensed, rng.uniform(2.0, 3.0, n), nucleus_brightness)
    major = np.where(condensed, major * 0.75, major)
    minor = np.where(condensed, minor * 0.75, minor)

    nucleolus_center, nucleolus_radius = _nucleoli(rng, nucleus, minor, params)
    droplet_center, droplet_radius, droplet_owner = _droplets(
        rng, centers, radius, differentiated, nucleus, major, params
    )
    area_mm2 = (extent_um[0] * extent_um[1]) / 1e6
    n_debris = rng.poisson(params.debris_per_mm2 * area_mm2)
    debris_center = rng.uniform((0, 0), extent_um, (n_debris, 2))
    debris_radius = rng.uniform(0.4, 1.5, n_debris)
    chromocenter_center, chromocenter_radius = _chromocenters(rng, nucleus, minor, params)
    return Layout(
        cell_center=centers, cell_radius=radius, cell_thickness=thickness,
        cytoplasm_brightness=brightness, differentiated=differentiated,
        nucleus_center=nucleus, nucleus_semi_axes=np.stack([major, minor], axis=1),
        nucleus_angle=angle, nucleus_brightness=nucleus_brightness,
        nucleolus_center=nucleolus_center, nucleolus_radius=nucleolus_radius,
        droplet_center=droplet_center, droplet_radius=droplet_radius, droplet_owner=droplet_owner,
        debris_center=debris_center, debris_radius=debris_radius,
        chromocenter_center=chromocenter_center, chromocenter_radius=chromocenter_radius,
    )


def _lattice(rng: np.random.Generator, extent_um: tuple[float, float], pitch: float,
             params: SynthParameters) -> np.ndarray:
    row_step = pitch * np.sqrt(3) / 2
    rows = np.arange(-pitch, extent_um[0] + pitch, row_step)
    cols = np.arange(-pitch, extent_um[1] + pitch, pitch)
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    grid_c = grid_c + (np.arange(len(rows))[:, None] % 2) * pitch / 2
    origin = rng.uniform(0, pitch, 2)
    points = np.stack([grid_r.ravel() + origin[0] - pitch / 2, grid_c.ravel() + origin[1] - pitch / 2], axis=1)
    points = points + rng.uniform(-1, 1, points.shape) * params.cell_jitter * pitch
    keep = rng.random(len(points)) >= params.cell_dropout
    points = points[keep]
    if params.cell_arrangement == "clumps":
        points = points[_in_clumps(rng, points, extent_um, pitch, params)]
    return points


def _in_clumps(rng: np.random.Generator, points: np.ndarray, extent_um: tuple[float, float], pitch: float,
               params: SynthParameters) -> np.ndarray:
    """Which ``points`` lie where a smooth random field is in its top ``clump_coverage`` fraction.

    The field is Gaussian noise smoothed to ``clump_size_um`` on a coarse grid (a quarter of the
    clump size), looked up at each point; thresholding it at its quantile leaves islands of cells
    of about that size with empty areas between them.
    """
    step = params.clump_size_um / 4
    grid = (int(np.ceil((extent_um[0] + 2 * pitch) / step)) + 1, int(np.ceil((extent_um[1] + 2 * pitch) / step)) + 1)
    size = sfft.next_fast_len(max(grid))
    tile = periodic_noise(rng, size, sigma_px=params.clump_size_um / (2 * step))
    rows = np.clip(((points[:, 0] + pitch) / step).round().astype(np.int64), 0, size - 1)
    cols = np.clip(((points[:, 1] + pitch) / step).round().astype(np.int64), 0, size - 1)
    value = tile[rows, cols]
    threshold = np.quantile(tile[: grid[0], : grid[1]], 1.0 - params.clump_coverage)
    return value >= threshold


def _separate_nuclei(nucleus: np.ndarray, centers: np.ndarray, major: np.ndarray) -> np.ndarray:
    """Move nuclei that would touch a neighbour's back to their cell centre (repeat until none do)."""
    nucleus = nucleus.copy()
    if len(nucleus) < 2:
        return nucleus
    for _ in range(4):
        pairs = cKDTree(nucleus).query_pairs(2 * major.max() + 2.0, output_type="ndarray")
        if len(pairs) == 0:
            break
        gap = np.linalg.norm(nucleus[pairs[:, 0]] - nucleus[pairs[:, 1]], axis=1)
        clash = pairs[gap < major[pairs[:, 0]] + major[pairs[:, 1]] + 2.0]
        if len(clash) == 0:
            break
        moved = np.unique(clash)
        nucleus[moved] = centers[moved]
    return nucleus


def _nucleoli(rng: np.random.Generator, nucleus: np.ndarray, minor: np.ndarray,
              params: SynthParameters) -> tuple[np.ndarray, np.ndarray]:
    count = rng.integers(params.nucleoli_per_nucleus[0], params.nucleoli_per_nucleus[1] + 1, len(nucleus))
    owner = np.repeat(np.arange(len(nucleus)), count)
    distance = 0.5 * minor[owner] * np.sqrt(rng.random(len(owner)))
    direction = rng.uniform(0, 2 * np.pi, len(owner))
    center = nucleus[owner] + distance[:, None] * np.stack([np.sin(direction), np.cos(direction)], axis=1)
    return center, rng.uniform(0.6, 1.3, len(owner))


def _chromocenters(rng: np.random.Generator, nucleus: np.ndarray, minor: np.ndarray,
                   params: SynthParameters) -> tuple[np.ndarray, np.ndarray]:
    """Bright DNA foci inside each nucleus; none (and no random draws) on the default plate."""
    low, high = params.chromocenters_per_nucleus
    if high <= 0:
        return np.empty((0, 2)), np.empty(0)
    count = rng.integers(low, high + 1, len(nucleus))
    owner = np.repeat(np.arange(len(nucleus)), count)
    distance = 0.75 * minor[owner] * np.sqrt(rng.random(len(owner)))
    direction = rng.uniform(0, 2 * np.pi, len(owner))
    center = nucleus[owner] + distance[:, None] * np.stack([np.sin(direction), np.cos(direction)], axis=1)
    return center, rng.uniform(0.4, 0.9, len(owner))


def _droplets(
    rng: np.random.Generator, centers: np.ndarray, radius: np.ndarray, differentiated: np.ndarray,
    nucleus: np.ndarray, nucleus_major: np.ndarray, params: SynthParameters,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy random packing of droplets into each adipocyte, largest first."""
    r_min, r_max = params.droplet_radius_um
    tree = cKDTree(centers)
    out_center, out_radius, out_owner = [], [], []
    for cell in np.flatnonzero(differentiated):
        # Each cell has its own largest droplet size: from many small to a few large ones.
        largest = np.exp(rng.uniform(np.log(2.5 * r_min), np.log(min(r_max, 0.7 * radius[cell]))))
        n_candidates = int(np.clip(3.0 * (radius[cell] / largest) ** 2, *params.droplets_per_cell))
        r = np.exp(rng.uniform(np.log(r_min), np.log(largest), n_candidates))
        r[0] = largest
        r = np.sort(r)[::-1]
        reach = np.maximum(radius[cell] - r, 0.0) * np.sqrt(rng.random(n_candidates))
        theta = rng.uniform(0, 2 * np.pi, n_candidates)
        c = centers[cell] + reach[:, None] * np.stack([np.sin(theta), np.cos(theta)], axis=1)
        # Stay inside the own Voronoi cell by at least the droplet radius, and off the nucleus.
        if len(centers) > 1:
            d, idx = tree.query(c, k=2)
            other = centers[np.where(idx[:, 0] == cell, idx[:, 1], idx[:, 0])]
            spacing = np.linalg.norm(other - centers[cell], axis=1)
            to_boundary = (np.sum((c - other) ** 2, 1) - np.sum((c - centers[cell]) ** 2, 1)) / (2 * spacing)
        else:  # a lone cell has no Voronoi boundary
            to_boundary = np.full(len(c), np.inf)
        off_nucleus = np.linalg.norm(c - nucleus[cell], axis=1) >= r + nucleus_major[cell] + 0.5
        ok = (to_boundary >= r + 0.5) & off_nucleus
        c, r = c[ok], r[ok]
        taken_c = np.empty((len(r), 2))
        taken_r = np.empty(len(r))
        n_taken = 0
        for j in range(len(r)):
            if n_taken:
                gap = np.hypot(taken_c[:n_taken, 0] - c[j, 0], taken_c[:n_taken, 1] - c[j, 1])
                if np.any(gap < taken_r[:n_taken] + r[j] + 0.3):
                    continue
            taken_c[n_taken] = c[j]
            taken_r[n_taken] = r[j]
            n_taken += 1
        out_center.append(taken_c[:n_taken])
        out_radius.append(taken_r[:n_taken])
        out_owner.append(np.full(n_taken, cell))
    if not out_center:
        return np.empty((0, 2)), np.empty(0), np.empty(0, dtype=np.int64)
    return np.concatenate(out_center), np.concatenate(out_radius), np.concatenate(out_owner)
