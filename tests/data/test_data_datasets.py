"""Datasets: deterministic per (seed, epoch, index), right shapes, bilinear targets, nucleus centring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vstain.data.augment import AugmentSettings, apply, build_pipeline
from vstain.data.datasets import (
    EpochSampler,
    FieldDataset,
    NucleusCropDataset,
    RandomCropDataset,
    nucleus_centres,
)
from vstain.data.store import FieldStore, _window
from vstain.plate.index import index_plate


def _store(plate, targets=("lipids",)):
    fields = index_plate(plate).fields
    return FieldStore(
        fields,
        targets,
        input_normalise=lambda x: x.astype(np.float32) / 65535.0,
        target_normalise=lambda x: x.astype(np.float32) / 65535.0,
        labels=lambda f: f.read_mask(),
    )


def test_window_reflects_outside_the_array():
    array = np.arange(16, dtype=np.uint16).reshape(1, 4, 4)
    window = _window(array, -1, -1, 3)
    assert window.shape == (1, 3, 3)
    # symmetric padding repeats the edge row/column
    np.testing.assert_array_equal(window[0], [[0, 0, 1], [0, 0, 1], [4, 4, 5]])


def test_random_crops_are_a_function_of_seed_epoch_and_index(random_plate):
    dataset = RandomCropDataset(_store(random_plate), crop=32, samples_per_epoch=4, seed=3)
    a, b = dataset[5], dataset[5]
    assert a["image"].shape == (7, 32, 32) and a["target"].shape == (1, 32, 32)
    assert a["mask"].shape == (32, 32)
    torch.testing.assert_close(a["image"], b["image"])
    other_epoch = dataset[1]  # same index 1, epoch 0 vs epoch 1 (5 = 1*4 + 1)
    assert not torch.equal(a["image"], other_epoch["image"])
    other_seed = RandomCropDataset(_store(random_plate), crop=32, samples_per_epoch=4, seed=4)[5]
    assert not torch.equal(a["image"], other_seed["image"])


def test_crop_larger_than_field_is_padded(random_plate):
    dataset = RandomCropDataset(_store(random_plate), crop=96, samples_per_epoch=2, augment=None)
    assert dataset[0]["image"].shape == (7, 96, 96)


def test_nucleus_crops_are_centred_on_nuclei_without_augmentation(random_plate):
    store = _store(random_plate)
    centres = nucleus_centres(store)
    assert len(centres) == 2 * len(store)  # two labelled squares per field
    dataset = NucleusCropDataset(store, crop=16, augment=None)
    assert len(dataset) == len(centres)
    assert not store._cache  # centring read only the masks, no field's images
    sample = dataset[0]
    assert sample["mask"][8, 8] == 1  # the crop centre lies on the nucleus


def test_target_is_resampled_bilinearly_and_mask_nearest():
    pipeline = build_pipeline(AugmentSettings(flips=False, rot90=False, scale=0.3, rotate=30))
    image = np.zeros((7, 32, 32), np.float32)
    target = np.zeros((1, 32, 32), np.float32)
    target[0, 12:20, 12:20] = 1.0
    mask = (target[0] > 0).astype(np.uint8)
    _, target_out, mask_out = apply(pipeline, image, target, mask, seed=11)
    # bilinear resampling creates intermediate values at the square's edges; nearest does not
    assert np.any((target_out > 0.05) & (target_out < 0.95))
    assert set(np.unique(mask_out)) <= {0, 1}


def test_augmentation_is_reproducible_per_seed():
    pipeline = build_pipeline(AugmentSettings(rotate=180, shift=0.2, scale=0.1))
    image = np.random.default_rng(0).random((7, 24, 24), dtype=np.float32)
    first = apply(pipeline, image, seed=5)[0]
    second = apply(pipeline, image, seed=5)[0]
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, apply(pipeline, image, seed=6)[0])


def test_field_dataset_returns_whole_fields(random_plate):
    dataset = FieldDataset(_store(random_plate, targets=("nuclei", "lipids", "cytoplasm")))
    sample = dataset[1]
    assert sample["image"].shape == (7, 64, 80)
    assert sample["target"].shape == (3, 64, 80)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_sampler_covers_every_sample_once_across_ranks(world_size):
    seen = []
    for rank in range(world_size):
        sampler = EpochSampler(10, seed=1, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        seen += list(sampler)
    assert sorted(seen) == list(range(20, 30))


def test_epoch_sampler_order_changes_with_epoch():
    sampler = EpochSampler(10, seed=1)
    first = [i % 10 for i in sampler]
    sampler.set_epoch(1)
    assert [i % 10 for i in sampler] != first


def test_mixed_sampling_centres_the_asked_fraction_of_crops(random_plate):
    store = _store(random_plate)
    n = 400
    on_nucleus = {}
    for fraction in (0.0, 0.5, 1.0):
        dataset = NucleusCropDataset(store, crop=16, augment=None, samples_per_epoch=n, centred_fraction=fraction)
        on_nucleus[fraction] = sum(int(dataset[i]["mask"][8, 8]) for i in range(n)) / n
    assert on_nucleus[1.0] == 1.0
    # The labelled squares cover a few per cent of each field: random crops rarely centre on one.
    assert on_nucleus[0.0] < 0.15
    assert abs(on_nucleus[0.5] - (0.5 + 0.5 * on_nucleus[0.0])) < 0.08
    with pytest.raises(ValueError, match="centred_fraction"):
        NucleusCropDataset(store, crop=16, centred_fraction=1.5)
