"""Turn a :class:`~vstain.synth.layout.Layout` into pixel maps of what is where, and how much.

The maps are physical quantities on the render canvas (thickness in µm, relative stain loading)
from which :mod:`vstain.synth.optics` makes brightfield and :mod:`vstain.synth.fluorescence`
makes the stains. Smooth per-cell quantities are evaluated on a 1 µm grid and interpolated up;
round objects are drawn in their own small windows (:mod:`vstain.synth.raster`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.spatial import cKDTree

from vstain.synth.layout import Layout
from vstain.synth.parameters import SynthParameters
from vstain.synth.raster import accumulate, iter_disc_pixels, periodic_noise

_TILE = 512


@dataclass(frozen=True)
class Specimen:
    """Pixel maps of one field's canvas (all ``float32`` except the labels)."""

    nucleus_labels: np.ndarray  #: int32, cell index + 1 inside each nucleus, 0 elsewhere
    chromatin: np.ndarray  #: Hoechst-bound DNA per pixel (≈1 inside a nucleus, textured)
    nucleus_thickness: np.ndarray  #: µm
    droplet_thickness: np.ndarray  #: µm, chord length through the droplets
    droplet_rim: np.ndarray  #: 0-1, shell of the larger droplets
    cytoplasm_thickness: np.ndarray  #: µm of cytoplasm (droplets excluded)
    cytoplasm_loading: np.ndarray  #: relative CellTracker concentration
    debris: np.ndarray  #: 0-1 small dense particles
    cell_body: np.ndarray | None = None  #: 0-1 cell footprint minus droplets (only if cytoplasm_fill > 0)


def render_specimen(layout: Layout, shape: tuple[int, int], params: SynthParameters,
                    rng: np.random.Generator) -> Specimen:
    """Rasterise ``layout`` onto a canvas of ``shape`` pixels (pixel (0, 0) at 0 µm)."""
    px = params.pixel_size_um
    tile = min(_TILE, sfft.next_fast_len(max(shape)))
    texture = periodic_noise(rng, tile, sigma_px=params.px(params.chromatin_grain_um))
    labels, chromatin, nucleus_thickness = _nuclei(layout, shape, params, texture)
    droplet_thickness, droplet_rim = _droplets(layout, shape, params)
    cell_height, loading, footprint = _cells(layout, shape, px, rng, footprint=params.cytoplasm_fill > 0)
    # Cytoplasm is pushed aside by droplets; a thin film still wraps each of them.
    excluded = 0.12 + 0.88 * np.exp(-droplet_thickness / 0.8)
    cytoplasm = cell_height * excluded
    grain = periodic_noise(rng, tile, sigma_px=params.px(0.8))
    loading = loading * (1.0 + 0.18 * _tile_to(grain, shape))
    debris = _debris(layout, shape, params)
    return Specimen(
        nucleus_labels=labels, chromatin=chromatin, nucleus_thickness=nucleus_thickness,
        droplet_thickness=droplet_thickness, droplet_rim=droplet_rim,
        cytoplasm_thickness=cytoplasm.astype(np.float32), cytoplasm_loading=loading.astype(np.float32),
        debris=debris,
        cell_body=None if footprint is None else (footprint * excluded).astype(np.float32),
    )


def _tile_to(tile: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    reps = (-(-shape[0] // tile.shape[0]), -(-shape[1] // tile.shape[1]))
    return np.tile(tile, reps)[: shape[0], : shape[1]]


def _nuclei(layout: Layout, shape: tuple[int, int], params: SynthParameters,
            texture: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    px = params.pixel_size_um
    centers = layout.nucleus_center / px
    major = layout.nucleus_semi_axes[:, 0] / px
    minor = layout.nucleus_semi_axes[:, 1] / px
    cos, sin = np.cos(layout.nucleus_angle), np.sin(layout.nucleus_angle)
    edge_px = params.px(0.3)
    labels = np.zeros(shape[0] * shape[1], dtype=np.int32)
    chromatin_flat = np.zeros(shape[0] * shape[1], dtype=np.float32)
    thickness_flat = np.zeros(shape[0] * shape[1], dtype=np.float32)
    for batch in iter_disc_pixels(centers, major, shape):
        o = batch.owner
        rho = _ellipse_radius(batch, cos, sin, major, minor)
        # Soft edge ~0.3 µm wide; the label is the half-way contour (rho <= 1, as in nucleus_labels).
        inside = np.clip((1.0 - rho) * minor[o] / edge_px + 0.5, 0.0, 1.0)
        keep = inside > 0
        o, rho, inside, flat = o[keep], rho[keep], inside[keep], batch.flat[keep]
        dome = np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))
        grain = texture[(flat // shape[1]) % len(texture), (flat % shape[1]) % len(texture)]
        density = inside * (0.8 + 0.2 * dome) * (1.0 + params.chromatin_texture * grain) * layout.nucleus_brightness[o]
        labels[flat[rho <= 1.0]] = o[rho <= 1.0] + 1
        chromatin_flat[flat] = density
        thickness_flat[flat] = params.nucleus_thickness_um * inside * (0.3 + 0.7 * dome)
    chromatin = chromatin_flat.reshape(shape)
    # Nucleoli hold little DNA: dark in Hoechst, a little denser in phase.
    nucleoli = np.zeros(shape, dtype=np.float32)
    for batch in iter_disc_pixels(layout.nucleolus_center / px, layout.nucleolus_radius / px, shape):
        r = layout.nucleolus_radius[batch.owner] / px
        dist = np.sqrt(batch.dy**2 + batch.dx**2)
        nucleoli += accumulate(batch.flat, np.clip((r - dist) / max(params.px(0.25), 1.0), 0, 1), shape)
    nucleoli = np.minimum(nucleoli, 1.0) * (labels.reshape(shape) > 0)
    chromatin *= 1.0 - 0.45 * nucleoli
    if len(layout.chromocenter_center):
        # Chromocenters: compact heterochromatin, bright in Hoechst, only inside the nucleus.
        foci = np.zeros(shape, dtype=np.float32)
        for batch in iter_disc_pixels(layout.chromocenter_center / px, layout.chromocenter_radius / px, shape):
            r = layout.chromocenter_radius[batch.owner] / px
            dist = np.sqrt(batch.dy**2 + batch.dx**2)
            foci += accumulate(batch.flat, np.clip((r - dist) / max(params.px(0.2), 1.0) + 0.5, 0, 1), shape)
        chromatin += params.chromocenter_brightness * np.minimum(foci, 1.0) * chromatin
    thickness = thickness_flat.reshape(shape) + 1.0 * nucleoli
    return labels.reshape(shape), chromatin, thickness


def _ellipse_radius(batch, cos: np.ndarray, sin: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Elliptical radius of each pixel of ``batch`` about its owner (1 on the outline)."""
    o = batch.owner
    u = (batch.dx * cos[o] + batch.dy * sin[o]) / major[o]
    v = (-batch.dx * sin[o] + batch.dy * cos[o]) / minor[o]
    return np.sqrt(u * u + v * v)


def nucleus_labels(layout: Layout, shape: tuple[int, int], params: SynthParameters, *,
                   origin_px: tuple[float, float], scale: float = 0.0,
                   centre_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Nucleus labels (cell index + 1, int32) in a frame moved against the render canvas.

    A point at canvas pixel ``P`` lands at ``centre + (1 + scale)·(P - origin - centre)`` of the
    returned ``shape`` image: ``origin_px`` is where the frame's pixel (0, 0) sits on the canvas
    (fractional, so the mask can follow a subpixel-shifted stain), ``scale`` a relative
    magnification about ``centre_px``. Same outline rule as the canvas labels (elliptical radius <= 1).
    """
    px = params.pixel_size_um
    centre = np.asarray(centre_px, dtype=np.float64)
    centers = centre + (1.0 + scale) * (layout.nucleus_center / px - np.asarray(origin_px) - centre)
    major = (1.0 + scale) * layout.nucleus_semi_axes[:, 0] / px
    minor = (1.0 + scale) * layout.nucleus_semi_axes[:, 1] / px
    cos, sin = np.cos(layout.nucleus_angle), np.sin(layout.nucleus_angle)
    labels = np.zeros(shape[0] * shape[1], dtype=np.int32)
    for batch in iter_disc_pixels(centers, major, shape):
        inside = _ellipse_radius(batch, cos, sin, major, minor) <= 1.0
        labels[batch.flat[inside]] = batch.owner[inside] + 1
    return labels.reshape(shape)


def _droplets(layout: Layout, shape: tuple[int, int], params: SynthParameters) -> tuple[np.ndarray, np.ndarray]:
    px = params.pixel_size_um
    thickness = np.zeros(shape, dtype=np.float32)
    rim = np.zeros(shape, dtype=np.float32)
    rim_width = 0.5  # µm
    for batch in iter_disc_pixels(layout.droplet_center / px, layout.droplet_radius / px, shape):
        radius = layout.droplet_radius[batch.owner]
        r = np.sqrt(batch.dy**2 + batch.dx**2) * px
        chord = 2.0 * np.sqrt(np.clip(radius**2 - r**2, 0.0, None))
        # Anti-alias the outline over one pixel so small droplets keep their area.
        cover = np.clip((radius - r) / px + 0.5, 0.0, 1.0)
        chord = np.maximum(chord, cover * np.minimum(2 * radius, px))
        thickness += accumulate(batch.flat, chord, shape)
        shell = np.exp(-(((radius - r) / rim_width) ** 2)) * cover * np.clip((radius - 2.0) / 3.0, 0.0, 1.0)
        rim += accumulate(batch.flat, shell, shape)
    return thickness, np.minimum(rim, 1.0)


def _cells(layout: Layout, shape: tuple[int, int], px: float, rng: np.random.Generator, *,
           footprint: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cytoplasm height, CellTracker loading and (if asked) the cell footprint, on a 1 µm grid.

    The grid is warped by a smooth random displacement before finding each point's cell, so
    cell outlines are wavy rather than the straight edges of a Voronoi diagram.
    """
    step = 1.0
    grid_shape = (int(np.ceil(shape[0] * px / step)) + 2, int(np.ceil(shape[1] * px / step)) + 2)
    gy, gx = np.mgrid[0 : grid_shape[0], 0 : grid_shape[1]].astype(np.float64) * step
    warp = 4.0  # µm
    warp_tile = min(256, sfft.next_fast_len(max(grid_shape)))
    gy += warp * _tile_to(periodic_noise(rng, warp_tile, sigma_px=7.0 / step), grid_shape)
    gx += warp * _tile_to(periodic_noise(rng, warp_tile, sigma_px=7.0 / step), grid_shape)
    points = np.stack([gy.ravel(), gx.ravel()], axis=1)
    centers = layout.cell_center
    if len(centers) == 0:  # an empty area (clumps, or a tiny field with every site dropped)
        empty = np.zeros(shape, dtype=np.float32)
        return empty, empty.copy(), (empty.copy() if footprint else None)
    distance, index = cKDTree(centers).query(points, k=2)
    own = index[:, 0]
    # Distance to the Voronoi boundary between a point's two nearest cells (none for a lone cell).
    to_boundary = np.full(len(points), np.inf)
    paired = index[:, 1] < len(centers)
    spacing = np.linalg.norm(centers[index[paired, 1]] - centers[own[paired]], axis=1)
    to_boundary[paired] = (distance[paired, 1] ** 2 - distance[paired, 0] ** 2) / (2 * spacing)
    radial = np.clip(1.0 - (distance[:, 0] / layout.cell_radius[own]) ** 2, 0.0, 1.0)
    membrane = 0.35 + 0.65 * np.clip(to_boundary / 2.0, 0.0, 1.0)
    height = layout.cell_thickness[own] * (0.25 + 0.75 * np.sqrt(radial)) * (radial > 0) * membrane
    loading = layout.cytoplasm_brightness[own] * (radial > 0)
    zoom = step / px
    out = []
    maps = (height, loading, (radial > 0).astype(np.float32)) if footprint else (height, loading)
    for grid_values in maps:
        grid = grid_values.reshape(grid_shape).astype(np.float32)
        rows = np.arange(shape[0], dtype=np.float32) / zoom
        cols = np.arange(shape[1], dtype=np.float32) / zoom
        out.append(_bilinear(grid, rows, cols))
    return out[0], out[1], (out[2] if footprint else None)


def _bilinear(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Separable linear interpolation of ``grid`` at fractional ``rows`` x ``cols``."""
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    fr = (rows - r0)[:, None]
    fc = (cols - c0)[None, :]
    top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c0 + 1] * fc
    bottom = grid[r0 + 1][:, c0] * (1 - fc) + grid[r0 + 1][:, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def _debris(layout: Layout, shape: tuple[int, int], params: SynthParameters) -> np.ndarray:
    px = params.pixel_size_um
    debris = np.zeros(shape, dtype=np.float32)
    for batch in iter_disc_pixels(layout.debris_center / px, layout.debris_radius / px, shape):
        radius = layout.debris_radius[batch.owner] / px
        dist = np.sqrt(batch.dy**2 + batch.dx**2)
        debris += accumulate(batch.flat, np.clip(radius - dist + 0.5, 0.0, 1.0), shape)
    return np.minimum(debris, 1.0)
