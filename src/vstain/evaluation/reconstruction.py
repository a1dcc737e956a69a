"""Grey reconstruction by dilation on integer ranks, the inner loop of dark holes and granularity.

CellProfiler's dark-hole enhancement and granularity spectrum call
``skimage.morphology.reconstruction`` repeatedly with the *same* mask and a cumulatively eroded
seed. Most of scikit-image's time per call goes to two comparison sorts of the stacked
seed + mask (an ``argsort`` and ``rank_order``), not to Robinson's downhill filter itself. Here the
images are integer ranks already (grey morphology only compares values, so ranking them first is
exact): the mask is sorted once for all seeds, each seed with one integer sort, the two merged by
counting, and list entries that can never act are left out (:class:`RankReconstructor`). The
filter is scikit-image's own compiled loop, which releases the GIL, so reconstructions can run
in threads. The result equals ``reconstruction(seed, mask, method="dilation")`` exactly; the
tests check it against scikit-image on random images with plateaus and ties.

On a full 20x field (5.5 Mpx, 0.8 M distinct values) the six dark-hole reconstructions take
21 s instead of 53 s. If a future scikit-image renames or changes its private loop (checked once
on a small image), the public ``reconstruction`` is used instead (same result, slower).
"""

from __future__ import annotations

import numpy as np
from skimage.morphology import reconstruction

try:  # private, compiled; guarded so a scikit-image upgrade only costs speed
    from skimage.morphology._grayreconstruct import reconstruction_loop as _downhill_loop
except ImportError:  # pragma: no cover - depends on the installed scikit-image
    _downhill_loop = None

#: 4-connected neighbourhood (``skimage.morphology.disk(1)``), the footprint CellProfiler uses.
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _argsort(values: np.ndarray, top: int) -> np.ndarray:
    """An ascending order of ``values`` (integers in 0..top < 2**32); ties in any order."""
    # A stable argsort of uint16 is NumPy's linear-time radix sort. Wider ranks take two such
    # passes, low half then high half (least significant digit first), which beats the
    # comparison sort by ~1.7x on a 20x field's 0.8 M distinct values.
    if top < 2**16:
        return np.argsort(values.astype(np.uint16), kind="stable")
    order = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    return order[np.argsort((values[order] >> 16).astype(np.uint16), kind="stable")]


_SELF_CHECK: dict[object, bool] = {}


def _fast_loop_usable() -> bool:
    """Whether scikit-image's private loop is there and still behaves as this module expects.

    Checked once per loop object on a small image against the public ``reconstruction``, so a
    scikit-image release that changes the loop's signature or meaning costs speed, not results.
    """
    loop = _downhill_loop
    if loop is None:
        return False
    if loop not in _SELF_CHECK:
        rng = np.random.default_rng(0)
        mask = rng.integers(0, 7, (9, 11))
        seed = np.minimum(mask, rng.integers(0, 7, (9, 11)))
        expected = reconstruction(seed, mask, method="dilation", footprint=CROSS)
        try:
            works = bool(np.array_equal(RankReconstructor(mask)._reconstruct(seed), expected))
        except (TypeError, ValueError):
            works = False
        _SELF_CHECK[loop] = works
    return _SELF_CHECK[loop]


def _neighbour_extreme(padded: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` over the 4 neighbours of every interior pixel of a 1-px padded plane."""
    return reduce(reduce(padded[:-2, 1:-1], padded[2:, 1:-1]), reduce(padded[1:-1, :-2], padded[1:-1, 2:]))


class RankReconstructor:
    """Grey reconstruction by dilation under one fixed ``mask``, for many seeds.

    scikit-image's downhill filter walks a linked list of every seed and mask pixel in
    descending rank order. Two kinds of entries never act, so they are left out of the list
    (the filter still links them in when it raises them):

    * a seed pixel no higher than any of its 4 neighbours cannot raise one when the walk
      reaches it (ranks only grow);
    * a mask entry only serves as the place a raised neighbour is linked to, which needs a
      4-neighbour with a higher mask; local maxima of the mask never serve.

    The kept mask entries are sorted once; each seed needs only its own sort, merged with the
    mask's by counting (both hold integer ranks).

    Parameters
    ----------
    mask
        2-D non-negative integer array: ranks of the mask image (e.g. from
        ``numpy.unique(..., return_inverse=True)``).
    """

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"RankReconstructor needs a 2-D mask, got shape {mask.shape}")
        if not np.issubdtype(mask.dtype, np.integer):
            raise TypeError("RankReconstructor needs integer ranks; rank float images with numpy.unique first")
        if mask.size and mask.min() < 0:
            raise ValueError("RankReconstructor needs non-negative ranks")
        self.mask = mask
        self.top = int(mask.max(initial=0))
        if self.top >= 2**31:
            raise ValueError(f"ranks must be below 2**31, got {self.top}: pass dense ranks (numpy.unique)")
        height, width = mask.shape
        if 2 * (height + 2) * (width + 2) >= 2**31:
            raise ValueError(f"image of {mask.size} pixels is too large for RankReconstructor")
        # Seed and mask are stacked and padded by one pixel of rank 0, as scikit-image lays
        # them out: border pixels then have in-bounds neighbours, and rank 0 can neither
        # spread nor be raised.
        padded = np.zeros((height + 2, width + 2), np.uint32)
        padded[1:-1, 1:-1] = mask
        self._mask_plane = padded.reshape(-1)
        self._mask_index: np.ndarray | None = None

    def _prepare_mask(self) -> None:
        padded = self._mask_plane.reshape(self.mask.shape[0] + 2, self.mask.shape[1] + 2)
        serves = np.zeros(padded.shape, bool)
        serves[1:-1, 1:-1] = padded[1:-1, 1:-1] < _neighbour_extreme(padded, np.maximum)
        index = np.flatnonzero(serves).astype(np.int32)
        self._mask_index = index[_argsort(self._mask_plane[index], self.top)]

    def __call__(self, seed: np.ndarray) -> np.ndarray:
        """The reconstruction of ``seed`` (integer ranks, ``seed <= mask``), dtype int32."""
        seed = np.asarray(seed)
        if seed.shape != self.mask.shape:
            raise ValueError(f"seed shape {seed.shape} differs from the mask's {self.mask.shape}")
        if not np.issubdtype(seed.dtype, np.integer):
            raise TypeError("reconstruction needs integer ranks; rank float images with numpy.unique first")
        if seed.size == 0:
            return np.zeros(seed.shape, np.int32)
        if seed.min() < 0:
            raise ValueError("reconstruction needs non-negative ranks")
        if np.any(seed > self.mask):
            raise ValueError("the seed must not exceed the mask for reconstruction by dilation")
        if not _fast_loop_usable():
            return reconstruction(seed, self.mask, method="dilation", footprint=CROSS).astype(np.int32)
        return self._reconstruct(seed)

    def _reconstruct(self, seed: np.ndarray) -> np.ndarray:
        if self._mask_index is None:
            self._prepare_mask()
        assert self._mask_index is not None

        height, width = seed.shape
        plane = self._mask_plane.size
        ranks = np.empty(2 * plane, np.uint32)
        seed_plane = ranks[:plane].reshape(height + 2, width + 2)
        seed_plane[0], seed_plane[-1], seed_plane[:, 0], seed_plane[:, -1] = 0, 0, 0, 0
        seed_plane[1:-1, 1:-1] = seed
        ranks[plane:] = self._mask_plane

        acts = np.zeros(seed_plane.shape, bool)
        acts[1:-1, 1:-1] = seed_plane[1:-1, 1:-1] > _neighbour_extreme(seed_plane, np.minimum)
        seed_index = np.flatnonzero(acts).astype(np.int32)
        seed_index = seed_index[_argsort(ranks[seed_index], self.top)]
        seed_sorted = ranks[seed_index]
        mask_index = self._mask_index
        mask_sorted = self._mask_plane[mask_index]

        # Merge the two ascending lists by counting, seed entries before mask entries of equal
        # rank: a seed entry's place = its place among seeds + mask entries of lower rank, a
        # mask entry's = its place among masks + seed entries of lower or equal rank.
        mask_below = np.concatenate(([0], np.cumsum(np.bincount(mask_sorted, minlength=self.top + 1))))
        seed_upto = np.cumsum(np.bincount(seed_sorted, minlength=self.top + 1))
        listed = seed_index.size + mask_index.size
        merged = np.empty(listed + 1, np.int32)
        merged[0] = 0  # a seed pad pixel (rank 0) ends the walk: the filter stops at rank 0
        merged[1 + np.arange(seed_index.size) + mask_below[seed_sorted]] = seed_index
        merged[1 + np.arange(mask_index.size) + seed_upto[mask_sorted]] = mask_index + plane
        order = merged[::-1]  # descending, as the downhill filter walks
        # Unlisted entries get previous = itself and next = -1, which makes the filter's
        # unlinking of them a no-op before it links them in.
        previous = np.arange(2 * plane, dtype=np.int32)
        following = np.full(2 * plane, -1, np.int32)
        previous[order[1:]] = order[:-1]
        previous[order[0]] = -1
        following[order[:-1]] = order[1:]
        row = width + 2
        strides = np.array([-row, -1, 1, row], np.int32)
        _downhill_loop(ranks, previous, following, strides, np.int32(order[0]), np.int32(plane))
        return seed_plane[1:-1, 1:-1].astype(np.int32)


def reconstruct_ranks(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey reconstruction by dilation of ``seed`` under ``mask``, 4-connected, on integer ranks.

    Parameters
    ----------
    seed, mask
        2-D non-negative integer arrays of equal shape with ``seed <= mask`` everywhere (ranks
        of the values, e.g. from ``numpy.unique(..., return_inverse=True)``).

    Returns
    -------
    numpy.ndarray
        The reconstruction, same shape, dtype ``int32``; equal to
        ``skimage.morphology.reconstruction(seed, mask, "dilation", footprint=disk(1))``.
        Use :class:`RankReconstructor` for several seeds under one mask.
    """
    seed = np.asarray(seed)
    mask = np.asarray(mask)
    if seed.shape != mask.shape or seed.ndim != 2:
        raise ValueError(f"reconstruct_ranks needs two 2-D arrays of one shape, got {seed.shape} and {mask.shape}")
    return RankReconstructor(mask)(seed)
