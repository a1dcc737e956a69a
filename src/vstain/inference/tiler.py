"""Run a fully convolutional network over a field of any size: tiles, blending, padding.

Three modes, chosen by what the hardware allows:

``reference``
    The reference's scheme: 512² tiles at stride 256 over the field reflect-padded at the
    bottom/right to a multiple of 512, outputs blended with the pyramid weights of
    pytorch-toolbelt (:func:`pyramid_weights`). Unlike the reference no extra tile is added when
    a side is already a multiple of 512 (it only cost time), and blending is float32.
``tiles``
    Large tiles (default 1024²) overlapping by a small margin (default 128); tiles are spread
    evenly so that the last one ends at the border (no padding of large fields) and blended with
    a raised-cosine ramp over the overlap (:func:`ramp_weights`). 9 tiles, ~1.7x redundancy on a 20x field
    instead of the reference's 3.9x.
``whole``
    The full field in one pass, reflect-padded to a multiple of 16 and cropped back. No
    redundancy and no seams.

``whole`` and ``tiles`` first reflect ``margin`` pixels (default :data:`DEFAULT_MARGIN`; ``reference``
keeps the reference's scheme, margin 0, unless told) of the field around all four sides and crop
them off the output: a network sees no brightfield beyond the field's edge, and
nuclei and droplets cut by the edge are drawn closer to what they are inside the field when the cut
part is mirrored (the overlap-tile strategy of U-Net; measured in docs/quality.md, "Context at the
field's edges").
Every mode handles fields smaller than a tile (the tile shrinks to the padded field). Blending
divides by the summed weights, so any weights give an exact partition of unity: a model that is
a pointwise linear map is reproduced exactly by every mode (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Tiler", "TileGrid", "TilerMode", "pyramid_weights", "ramp_weights", "reflect_pad", "reflect_margin",
           "MODES", "DEFAULT_MARGIN", "default_margin"]

TilerMode = Literal["reference", "tiles", "whole"]
MODES: tuple[str, ...] = ("reference", "tiles", "whole")

#: Default (tile size, overlap) of each tiled mode.
DEFAULT_TILES: dict[str, tuple[int, int]] = {"reference": (512, 256), "tiles": (1024, 128)}
#: Networks need sides divisible by 2^(number of poolings); 16 for the reference Tiramisus.
SIZE_MULTIPLE = 16
#: Pixels of the field reflected around every side before a network runs in the ``whole`` and ``tiles``
#: modes (0: none, as before 2026-12-04; ``reference`` mode defaults to 0, the reference's scheme).
#: 64 and 128 gave the same predictions within 0.002 of pixel error (docs/quality.md).
DEFAULT_MARGIN = 64


def pyramid_weights(height: int, width: int) -> np.ndarray:
    """Pyramid (centre-heavy) blending weights of one tile, as in pytorch-toolbelt.

    With pixel centres at ``i + 0.5``: ``Dc`` is the distance to the tile centre, ``De`` the
    distance to the nearest edge (``sqrt(min((i+.5)², (i-w+.5)²) + .25)`` per axis, minimum over
    the axes), and ``W = α·De/(Dc + De)`` with ``α`` making the mean 1. For 512² the corner is
    0.0063 and the centre 3.197.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` float32 weights (computed in float64).
    """
    rows = np.arange(height, dtype=np.float64)[:, None]
    cols = np.arange(width, dtype=np.float64)[None, :]
    # The toolbelt formula pairs the first axis with the tile width; for square tiles (all the
    # reference used) the orientation is moot, and for rectangles this keeps it symmetric.
    centre = np.hypot(rows - height / 2 + 0.5, cols - width / 2 + 0.5)
    edge_rows = np.sqrt(np.minimum((rows + 0.5) ** 2, (rows - height + 0.5) ** 2) + 0.25)
    edge_cols = np.sqrt(np.minimum((cols + 0.5) ** 2, (cols - width + 0.5) ** 2) + 0.25)
    edge = np.minimum(edge_rows, edge_cols)
    weights = edge / (centre + edge)
    weights *= height * width / weights.sum()
    return weights.astype(np.float32)


def _ramp(length: int, ramp: int) -> np.ndarray:
    """1-D window: raised-cosine rise over ``ramp`` pixels at both ends, 1 in between."""
    window = np.ones(length, dtype=np.float64)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        window[:ramp] = rise
        window[length - ramp :] = rise[::-1]
    return window


def ramp_weights(height: int, width: int, *, ramp_rows: int, ramp_cols: int) -> np.ndarray:
    """Separable raised-cosine tile window, float32 ``(height, width)``, strictly positive.

    ``ramp_rows``/``ramp_cols`` are the overlaps along each axis (0 where the axis has a single
    tile, giving flat weights).
    """
    return np.outer(_ramp(height, ramp_rows), _ramp(width, ramp_cols)).astype(np.float32)


def reflect_pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Reflect-pad ``x`` (..., H, W) at the bottom and right by any amount.

    ``F.pad(mode="reflect")`` needs the pad to be smaller than the side; larger pads (fields
    smaller than a tile) are built by reflecting repeatedly, as ``numpy.pad(mode="reflect")``
    does. A side of one pixel is replicated.
    """
    while bottom > 0 or right > 0:
        height, width = x.shape[-2:]
        step_b = min(bottom, height - 1)
        step_r = min(right, width - 1)
        if (bottom and step_b == 0) or (right and step_r == 0):
            x = F.pad(x, (0, right if step_r == 0 else 0, 0, bottom if step_b == 0 else 0), mode="replicate")
            bottom = 0 if step_b == 0 else bottom
            right = 0 if step_r == 0 else right
            continue
        x = F.pad(x, (0, step_r, 0, step_b), mode="reflect")
        bottom -= step_b
        right -= step_r
    return x


def reflect_margin(x: torch.Tensor, margin: int) -> torch.Tensor:
    """Reflect-pad ``x`` (..., H, W) by ``margin`` pixels on all four sides (any margin, as :func:`reflect_pad`)."""
    if margin <= 0:
        return x
    x = reflect_pad(x, margin, margin).flip(-2, -1)
    return reflect_pad(x, margin, margin).flip(-2, -1)


def default_margin(mode: str) -> int:
    """The margin a mode uses unless told: :data:`DEFAULT_MARGIN`, 0 for ``reference`` (the reference's scheme)."""
    return 0 if mode == "reference" else DEFAULT_MARGIN


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one field lie.

    ``padded_shape`` is the size of the reflect-padded field the tiles are cut from (its margins included),
    ``tile_shape`` the size of every tile and ``origins`` their top-left corners.
    """

    field_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    tile_shape: tuple[int, int]
    origins: tuple[tuple[int, int], ...]
    overlap: tuple[int, int]

    def __len__(self) -> int:
        return len(self.origins)


class Tiler:
    """Apply a network to a field tile by tile (or whole) and blend the tiles back.

    Parameters
    ----------
    mode
        ``"reference"``, ``"tiles"`` or ``"whole"`` (see the module docstring).
    tile_size, overlap
        Tile side and overlap in pixels for the tiled modes (defaults 512/256 for ``reference``
        - i.e. stride 256 - and 1024/128 for ``tiles``); ignored by ``whole``.
    multiple
        Side multiple the network needs (16 for four poolings).
    margin
        Pixels of the field reflected around all four sides before tiling and cropped off the
        output (context for the field's edges; 0 turns it off). None: :data:`DEFAULT_MARGIN` for
        ``whole`` and ``tiles``, 0 for ``reference`` (the reference's scheme).

    Examples
    --------
    >>> tiler = Tiler("tiles", tile_size=256, overlap=32)
    >>> out = tiler(torch.rand(7, 300, 400), lambda t: t[:, :1], batch_size=4)
    >>> tuple(out.shape)
    (1, 300, 400)
    """

    def __init__(
        self,
        mode: str = "whole",
        *,
        tile_size: int | None = None,
        overlap: int | None = None,
        multiple: int = SIZE_MULTIPLE,
        margin: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown tiling mode {mode!r}; choose one of {', '.join(MODES)}")
        if margin is None:
            margin = default_margin(mode)
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"margin must be a whole number of pixels >= 0, got {margin!r}")
        self.mode = mode
        self.multiple = multiple
        self.margin = margin
        default_size, default_overlap = DEFAULT_TILES.get(mode, (0, 0))
        self.tile_size = int(tile_size or default_size)
        self.overlap = int(default_overlap if overlap is None else overlap)
        if mode != "whole":
            if self.tile_size % multiple:
                raise ValueError(f"tile size {self.tile_size} must be a multiple of {multiple}")
            if not 0 <= self.overlap < self.tile_size:
                raise ValueError(f"overlap {self.overlap} must be in [0, tile size {self.tile_size})")

    def __repr__(self) -> str:
        margin = f", margin={self.margin}" if self.margin != default_margin(self.mode) else ""
        if self.mode == "whole":
            return f"Tiler('whole'{margin})"
        return f"Tiler({self.mode!r}, tile_size={self.tile_size}, overlap={self.overlap}{margin})"

    def describe(self) -> dict[str, object]:
        """Settings as a JSON-able dict (for manifests).

        ``margin`` is left out when 0, so that outputs written before it existed (made without one)
        still match a run with ``margin=0``.
        """
        margin = {"margin": self.margin} if self.margin else {}
        if self.mode == "whole":
            return {"mode": "whole", "multiple": self.multiple, **margin}
        return {"mode": self.mode, "tile_size": self.tile_size, "overlap": self.overlap, **margin}

    # ------------------------------------------------------------------ geometry
    def _axis(self, size: int) -> tuple[int, int, list[int], int]:
        """(padded size, tile length, origins, overlap) along one axis of a field with its margins."""
        # a field that fits one tile keeps one pass: its margins add to the tile, not a second row of tiles
        if self.mode == "whole" or (self.mode == "tiles" and size <= self.tile_size + 2 * self.margin):
            padded = _round_up(size, self.multiple)
            return padded, padded, [0], 0
        if self.mode == "reference":
            tile = self.tile_size
            padded = max(_round_up(size, tile), tile)
            stride = tile - self.overlap
            return padded, tile, list(range(0, padded - tile + 1, stride)), self.overlap
        tile, overlap = self.tile_size, self.overlap
        count = math.ceil((size - tile) / (tile - overlap)) + 1
        origins = np.round(np.linspace(0, size - tile, count)).astype(int).tolist()
        return size, tile, origins, overlap

    def grid(self, height: int, width: int) -> TileGrid:
        """Tile layout for a ``height`` x ``width`` field; origins are in the field with its margins."""
        pad_h, tile_h, rows, over_h = self._axis(height + 2 * self.margin)
        pad_w, tile_w, cols, over_w = self._axis(width + 2 * self.margin)
        origins = tuple((y, x) for y in rows for x in cols)
        return TileGrid((height, width), (pad_h, pad_w), (tile_h, tile_w), origins, (over_h, over_w))

    def weights(self, grid: TileGrid) -> np.ndarray:
        """Blending weights of one tile of ``grid`` (float32)."""
        tile_h, tile_w = grid.tile_shape
        if self.mode == "reference":
            return pyramid_weights(tile_h, tile_w)
        if len(grid) == 1:
            return np.ones((tile_h, tile_w), dtype=np.float32)
        return ramp_weights(tile_h, tile_w, ramp_rows=grid.overlap[0], ramp_cols=grid.overlap[1])

    def smaller(self) -> "Tiler | None":
        """The next, lighter tiler to fall back to after running out of memory, or None.

        ``whole`` → ``tiles`` 1024/128 → 512/64 → 256/32; ``reference`` has nowhere to go.
        """
        if self.mode == "whole":
            return Tiler("tiles", multiple=self.multiple, margin=self.margin)
        if self.mode == "tiles" and self.tile_size // 2 >= 256 and (self.tile_size // 2) % self.multiple == 0:
            return Tiler("tiles", tile_size=self.tile_size // 2, overlap=max(self.overlap // 2, 16),
                         multiple=self.multiple, margin=self.margin)
        return None

    # ------------------------------------------------------------------ running
    def __call__(
        self,
        image: torch.Tensor,
        network: Callable[[torch.Tensor], torch.Tensor],
        *,
        batch_size: int = 4,
    ) -> torch.Tensor:
        """Run ``network`` over ``image`` and return the blended float32 output.

        Parameters
        ----------
        image
            ``(C, H, W)`` input (already normalised), on the device the network runs on.
        network
            Maps a batch ``(B, C, h, w)`` to ``(B, K, h, w)``.
        batch_size
            Tiles per network call.

        Returns
        -------
        torch.Tensor
            ``(K, H, W)`` float32 on ``image``'s device.
        """
        if image.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        grid = self.grid(height, width)
        margin = self.margin
        framed = reflect_margin(image, margin)
        padded = reflect_pad(framed, grid.padded_shape[0] - framed.shape[-2], grid.padded_shape[1] - framed.shape[-1])
        field = (slice(margin, margin + height), slice(margin, margin + width))
        if len(grid) == 1:
            return network(padded[None])[0, :, field[0], field[1]].float()

        tile_h, tile_w = grid.tile_shape
        weights = torch.from_numpy(self.weights(grid)).to(image.device)
        total = torch.zeros(grid.padded_shape, dtype=torch.float32, device=image.device)
        for y, x in grid.origins:
            total[y : y + tile_h, x : x + tile_w] += weights
        out: torch.Tensor | None = None
        for start in range(0, len(grid), max(1, batch_size)):
            chunk = grid.origins[start : start + max(1, batch_size)]
            batch = torch.stack([padded[:, y : y + tile_h, x : x + tile_w] for y, x in chunk])
            pred = network(batch).float()
            if out is None:
                out = torch.zeros((pred.shape[1], *grid.padded_shape), dtype=torch.float32, device=image.device)
            for (y, x), tile in zip(chunk, pred):
                out[:, y : y + tile_h, x : x + tile_w].addcmul_(tile, weights)
        assert out is not None
        return out[:, field[0], field[1]] / total[field]
