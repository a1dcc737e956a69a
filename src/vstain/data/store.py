"""Pixel access to the fields of a plate for training: crops read lazily, normalised per crop.

A :class:`FieldStore` holds the uint16 data of the training fields — decoded TIFFs kept in a
small LRU (or memory-mapped arrays from ``vstain cache``) — and returns *normalised float32
crops*, so only the pixels a sample uses are converted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from vstain.plate.index import Field

Normalise = Callable[[np.ndarray], np.ndarray]


@dataclass
class FieldArrays:
    """The uint16 arrays of one field: brightfield (7,H,W), targets (K,H,W) and labels (H,W)."""

    brightfield: np.ndarray
    targets: np.ndarray | None
    labels: np.ndarray | None


class FieldStore:
    """Lazy, cached access to fields' pixels.

    Parameters
    ----------
    fields
        Fields to serve (index ``i`` of every method refers to ``fields[i]``).
    targets
        Target stains to load, in output-channel order (may be empty for inference-only data).
    input_normalise, target_normalise
        Functions mapping uint16 ``(C,h,w)`` crops to float32 in [0, 1] (see
        :class:`vstain.plate.normalize.Normalizer`).
    labels
        Optional function ``field -> (H,W) label image`` (nucleus masks); called once per field.
    max_cached
        How many decoded fields to keep in memory.
    """

    def __init__(
        self,
        fields: Sequence[Field],
        targets: Sequence[str],
        *,
        input_normalise: Normalise,
        target_normalise: Normalise | None = None,
        labels: Callable[[Field], np.ndarray] | None = None,
        max_cached: int = 8,
        target_offsets: Callable[[Field, str], tuple[float, float]] | None = None,
    ) -> None:
        self.fields = list(fields)
        self.targets = tuple(targets)
        self.input_normalise = input_normalise
        self.target_normalise = target_normalise
        self.labels = labels
        self.max_cached = max(1, max_cached)
        self.target_offsets = target_offsets
        self._cache: OrderedDict[int, FieldArrays] = OrderedDict()

    def __len__(self) -> int:
        return len(self.fields)

    def arrays(self, index: int) -> FieldArrays:
        """The uint16 arrays of field ``index`` (decoded once, then cached)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        field = self.fields[index]
        brightfield = field.read_brightfield()
        targets = (
            np.stack([self._target(field, t) for t in self.targets]) if self.targets else None
        )
        labels = self.labels(field) if self.labels is not None else None
        arrays = FieldArrays(brightfield, targets, labels)
        self._cache[index] = arrays
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return arrays

    def _target(self, field: Field, target: str) -> np.ndarray:
        """A target as stored, or resampled into the brightfield frame (float32) when offsets are given."""
        image = field.read_target(target)
        if self.target_offsets is None:
            return image
        from vstain.alignment.resample import to_brightfield_frame

        return to_brightfield_frame(image, self.target_offsets(field, target))

    def field_labels(self, index: int) -> np.ndarray | None:
        """The label image of field ``index`` without decoding its brightfield and targets."""
        if index in self._cache:
            return self._cache[index].labels
        return self.labels(self.fields[index]) if self.labels is not None else None

    def shape(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of field ``index``."""
        field = self.fields[index]
        if field.shape is not None:
            return field.shape
        return tuple(self.arrays(index).brightfield.shape[-2:])  # type: ignore[return-value]

    def crop(
        self, index: int, top: int, left: int, size: int
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Normalised ``(image, target, labels)`` of a ``size``² window; reflect-padded outside the field."""
        arrays = self.arrays(index)
        image = self.input_normalise(_window(arrays.brightfield, top, left, size))
        target = None
        if arrays.targets is not None and self.target_normalise is not None:
            target = self.target_normalise(_window(arrays.targets, top, left, size))
        labels = None
        if arrays.labels is not None:
            labels = _window(arrays.labels[None], top, left, size)[0]
        return image.astype(np.float32, copy=False), (
            None if target is None else target.astype(np.float32, copy=False)
        ), labels

    def whole(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Normalised ``(image, target, labels)`` of the whole field (validation)."""
        arrays = self.arrays(index)
        image = self.input_normalise(arrays.brightfield).astype(np.float32, copy=False)
        target = None
        if arrays.targets is not None and self.target_normalise is not None:
            target = self.target_normalise(arrays.targets).astype(np.float32, copy=False)
        return image, target, arrays.labels


def _window(array: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``array[:, top:top+size, left:left+size]``, reflect-padded where the window leaves the array."""
    _, height, width = array.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, height), min(left + size, width)
    window = array[:, y0:y1, x0:x1]
    pad = ((0, 0), (y0 - top, top + size - y1), (x0 - left, left + size - x1))
    if any(p for pair in pad for p in pair):
        # "symmetric" never fails, even when the pad exceeds the window (tiny fields).
        window = np.pad(window, pad, mode="symmetric")
    return window
