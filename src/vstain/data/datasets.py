"""Torch datasets over a :class:`~vstain.data.store.FieldStore`.

Every sample is a pure function of ``(seed, epoch, index)``: the sampler
(:class:`EpochSampler`) hands out global ids ``epoch * len(dataset) + i``, and the dataset derives
the crop position and the augmentation from them. The same run therefore sees the same data
whatever the number of workers or processes, and a run resumed at an epoch boundary continues
exactly as an uninterrupted one.

Samples are dicts: ``image`` (7,S,S) float32, ``target`` (K,S,S) float32 and, where labels
exist, ``mask`` (S,S) float32 in {0,1} (nucleus foreground).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vstain.data.augment import AugmentSettings, apply, build_pipeline
from vstain.data.store import FieldStore


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def _sample(image: np.ndarray, target: np.ndarray | None, labels: np.ndarray | None) -> dict:
    sample = {"image": torch.from_numpy(np.ascontiguousarray(image))}
    if target is not None:
        sample["target"] = torch.from_numpy(np.ascontiguousarray(target))
    if labels is not None:
        sample["mask"] = torch.from_numpy((labels > 0).astype(np.float32))
    return sample


class _EpochDataset(Dataset):
    """Base: decodes global ids into (epoch, index) and augments with a per-sample seed."""

    def __init__(self, store: FieldStore, *, length: int, augment: AugmentSettings | None, seed: int):
        if length < 1:
            raise ValueError("a training dataset needs at least one sample per epoch")
        self.store = store
        self.length = length
        self.seed = seed
        self.augment = augment
        self._pipeline = build_pipeline(augment) if augment is not None else None

    def __len__(self) -> int:
        return self.length

    def _decode(self, global_index: int) -> tuple[int, int]:
        return divmod(int(global_index), self.length)

    def _augment(self, image, target, labels, rng: np.random.Generator):
        if self._pipeline is None:
            return image, target, labels
        return apply(self._pipeline, image, target, labels, seed=int(rng.integers(2**31)))


class RandomCropDataset(_EpochDataset):
    """Random ``crop``² windows of random training fields (lipids, cytoplasm recipes).

    Fields are drawn uniformly; ``samples_per_epoch`` defaults to the number of fields (one crop
    per field per epoch, as the reference's loader did).
    """

    def __init__(
        self,
        store: FieldStore,
        *,
        crop: int,
        samples_per_epoch: int | None = None,
        augment: AugmentSettings | None = AugmentSettings(),
        seed: int = 42,
    ):
        super().__init__(store, length=samples_per_epoch or len(store), augment=augment, seed=seed)
        self.crop = crop

    def __getitem__(self, global_index: int) -> dict:
        epoch, index = self._decode(global_index)
        rng = _rng(self.seed, epoch, index)
        field = int(rng.integers(len(self.store)))
        height, width = self.store.shape(field)
        top = int(rng.integers(max(height - self.crop, 0) + 1))
        left = int(rng.integers(max(width - self.crop, 0) + 1))
        image, target, labels = self.store.crop(field, top, left, self.crop)
        return _sample(*self._augment(image, target, labels, rng))


class NucleusCropDataset(_EpochDataset):
    """``crop``² windows centred on nuclei (nuclei recipe), one sample per nucleus per epoch.

    Centres are the centroids of the label image's objects (labels kept apart, unlike the
    reference, which binarised first and merged touching nuclei). The augmentation's shift then
    moves the nucleus off-centre so the network does not learn a centre bias.

    With ``centred_fraction < 1`` (``data.sampling: mixed``) each sample is, with probability
    ``1 - centred_fraction``, a random window of a random field instead: the network sees the
    nuclei often enough to learn them, and the empty background as often as it occurs, so it
    neither misses faint nuclei nor paints them everywhere.
    """

    def __init__(
        self,
        store: FieldStore,
        *,
        crop: int,
        samples_per_epoch: int | None = None,
        augment: AugmentSettings | None = AugmentSettings(shift=0.2, scale=0.1, rotate=180),
        seed: int = 42,
        centred_fraction: float = 1.0,
    ):
        if not 0.0 <= centred_fraction <= 1.0:
            raise ValueError(f"centred_fraction must be within [0, 1], got {centred_fraction}")
        self.centres = nucleus_centres(store)
        if len(self.centres) == 0:
            raise ValueError("no nuclei in the training fields' masks: cannot make nucleus-centred crops")
        super().__init__(store, length=samples_per_epoch or len(self.centres), augment=augment, seed=seed)
        self.crop = crop
        self.centred_fraction = float(centred_fraction)

    def __getitem__(self, global_index: int) -> dict:
        epoch, index = self._decode(global_index)
        rng = _rng(self.seed, epoch, index)
        if self.centred_fraction < 1.0 and rng.random() >= self.centred_fraction:
            field = int(rng.integers(len(self.store)))
            height, width = self.store.shape(field)
            top = int(rng.integers(max(height - self.crop, 0) + 1))
            left = int(rng.integers(max(width - self.crop, 0) + 1))
        else:
            # With fewer samples than nuclei, draw nuclei at random; otherwise walk them in order.
            pick = index if self.length == len(self.centres) else int(rng.integers(len(self.centres)))
            field, row, col = (int(v) for v in self.centres[pick % len(self.centres)])
            top, left = row - self.crop // 2, col - self.crop // 2
        image, target, labels = self.store.crop(field, top, left, self.crop)
        return _sample(*self._augment(image, target, labels, rng))


class FieldDataset(Dataset):
    """Whole fields, normalised, for validation through the real inference tiler."""

    def __init__(self, store: FieldStore):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> dict:
        image, target, labels = self.store.whole(index)
        sample = _sample(image, target, labels)
        sample["index"] = index
        raw = self.store.arrays(index).targets
        if raw is not None:
            # The metric is computed on raw counts; normalised targets may be clipped.
            sample["target_raw"] = torch.from_numpy(raw.astype(np.int32))
        return sample


def nucleus_centres(store: FieldStore) -> np.ndarray:
    """``(N, 3)`` int array of (field index, row, column) of every labelled nucleus."""
    from scipy import ndimage

    rows: list[np.ndarray] = []
    for index in range(len(store)):
        # Only the masks are needed here: decoding every field's 10 images just for them
        # would read the whole training set once more than training does.
        labels = store.field_labels(index)
        if labels is None:
            raise ValueError(f"{store.fields[index].label}: no nucleus labels to centre crops on")
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if ids.size == 0:
            continue
        centres = np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, ids))
        centres = np.floor(centres).astype(np.int64)
        rows.append(np.column_stack([np.full(len(ids), index), centres]))
    return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)


class EpochSampler(Sampler[int]):
    """Yields global sample ids ``epoch * n + i`` in a seeded shuffled order, sharded by rank.

    Lightning calls :meth:`set_epoch` at every epoch (also under DDP), which is what makes each
    epoch's samples differ and a resumed run continue identically.
    """

    def __init__(self, length: int, *, seed: int = 42, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))

    def __iter__(self) -> Iterator[int]:
        order = np.arange(self.length)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 7919]).permutation(self.length)
        base = self.epoch * self.length
        for i in order[self.rank :: self.world_size]:
            yield base + int(i)
