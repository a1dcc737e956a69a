"""Memory-mapped cache: identical pixels, resumable, never writes into the plate."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from plate_files import make_plate

from vstain.errors import PlateError, VstainError
from vstain.plate.cache import (
    MANIFEST,
    PlateCache,
    cache_plate,
    default_cache_folder,
    field_folder,
    open_cached_field,
)
from vstain.plate.index import index_plate
from vstain.plate.tiff import write_tiff


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def plate_with_mask(tmp_path: Path) -> Path:
    root = tmp_path / "plate"
    make_plate(root, wells=("B03",), fields=2, shape=(20, 24))
    make_plate(root, wells=("C02",), fields=1, shape=(20, 24), targets=(), seed=1)
    index = index_plate(root)
    labels = np.zeros((20, 24), np.uint16)
    labels[3:9, 5:12] = 7
    write_tiff(root / "masks" / "20x_images" / (index.fields[0].target_filename("nuclei") + "f"), labels)
    return root


def test_cache_returns_identical_pixels(plate_with_mask: Path, tmp_path: Path):
    before = snapshot(plate_with_mask)
    index = index_plate(plate_with_mask)
    folder = default_cache_folder(plate_with_mask)
    assert folder == plate_with_mask.resolve().with_name("plate.vstain-cache")
    report = cache_plate(index.fields, folder, plate=plate_with_mask)
    assert report.written == [f.key for f in index.fields] and report.skipped == []
    cache = PlateCache(folder)
    assert cache.keys == [f.key for f in index.fields] and len(cache) == 3
    for f in index.fields:
        cached = cache.open(f.key)
        assert isinstance(cached.brightfield, np.memmap) and cached.brightfield.shape == (7, 20, 24)
        np.testing.assert_array_equal(cached.brightfield, f.read_brightfield())
        assert set(cached.targets) == set(f.targets)
        for target in f.targets:
            np.testing.assert_array_equal(cached.targets[target], f.read_target(target))
        if f.mask is None:
            assert cached.mask is None
        else:
            np.testing.assert_array_equal(cached.mask, f.read_mask())
    # a random crop from the map equals the same crop of the TIFF stack
    f = index.fields[1]
    crop = open_cached_field(folder, f.key).brightfield[:, 4:14, 7:19]
    np.testing.assert_array_equal(crop, f.read_brightfield()[:, 4:14, 7:19])
    assert index.fields[0].mask is not None and cache.open(index.fields[0].key).mask is not None
    assert snapshot(plate_with_mask) == before  # the plate is never written to


def test_cache_is_resumable(plate_with_mask: Path, tmp_path: Path):
    index = index_plate(plate_with_mask)
    folder = tmp_path / "cache"
    cache_plate(index.fields, folder)
    record = folder / field_folder(index.fields[1].key) / "field.json"
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")}

    again = cache_plate(index.fields, folder)
    assert again.written == [] and len(again.skipped) == 3
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")} == stamps

    record.unlink()  # as if interrupted before the field was complete
    changed = index.fields[2].brightfield[3]
    write_tiff(changed, np.full((20, 24), 9, np.uint16))  # a source changed since
    os.utime(changed, ns=(1, 1))
    third = cache_plate(index.fields, folder)
    assert third.written == [index.fields[1].key, index.fields[2].key]
    assert np.all(PlateCache(folder).open(index.fields[2].key).brightfield[3] == 9)


def test_cache_refuses_to_write_into_the_plate(plate_with_mask: Path):
    fields = index_plate(plate_with_mask).fields
    before = snapshot(plate_with_mask)
    for inside in (plate_with_mask / "cache", plate_with_mask, plate_with_mask / "20x_images" / "c"):
        with pytest.raises(PlateError, match="inside the plate"):
            cache_plate(fields, inside, plate=plate_with_mask)
    with pytest.raises(PlateError, match="inside the plate"):  # images' folder guarded even without plate=
        cache_plate(fields, plate_with_mask / "20x_images" / "c")
    assert snapshot(plate_with_mask) == before


def test_reading_a_broken_cache_is_one_clear_error(plate_with_mask: Path, tmp_path: Path):
    with pytest.raises(VstainError, match="no manifest.json"):
        PlateCache(tmp_path)
    index = index_plate(plate_with_mask)
    folder = tmp_path / "cache"
    cache_plate(index.fields, folder)
    with pytest.raises(VstainError, match="20x H01 F001 is not cached"):
        open_cached_field(folder, ("20x", "H01", 1))
    npy = folder / field_folder(index.fields[0].key) / "lipids.npy"
    npy.write_bytes(b"garbage")
    with pytest.raises(VstainError, match="lipids.npy: unreadable cache file"):
        open_cached_field(folder, index.fields[0].key)
    npy.unlink()
    with pytest.raises(VstainError, match="lipids.npy: missing from the cache"):
        open_cached_field(folder, index.fields[0].key)
    (folder / MANIFEST).write_text("{}")
    with pytest.raises(VstainError, match="not a vstain cache manifest"):
        PlateCache(folder)
