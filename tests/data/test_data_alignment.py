"""``data.alignment``: targets resampled into the brightfield frame, offsets saved and carried, mismatches refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vstain.alignment.offsets import OffsetTable, resolve
from vstain.alignment.resample import to_brightfield_frame
from vstain.config import TrainConfig, load_config
from vstain.data.datamodule import PlateDataModule
from vstain.errors import AlignmentError, ConfigError
from vstain.inference.bundle import BundleMetadata


def _config(plate: Path, **data) -> TrainConfig:
    return TrainConfig.model_validate({
        "name": "align_check", "recipe": "regression",
        "data": {"root": str(plate), "targets": ["lipids"], "crop_size": 32, "holdout_fields": 1, **data},
    })


def _offsets(tmp_path: Path, magnification="20x", fields=(1, 2)) -> Path:
    measured = {(magnification, w, n, "lipids"): (1.5 * n, -0.5 * n, 1.0) for w in ("B02", "B03") for n in fields}
    return resolve(measured).save(tmp_path / "given.csv")


def test_alignment_setting_is_validated(tmp_path, random_plate):
    assert _config(random_plate).data.alignment == "none"
    assert _config(random_plate, alignment="auto").data.alignment == "auto"
    assert _config(random_plate, alignment=str(_offsets(tmp_path))).data.alignment == tmp_path / "given.csv"
    config = tmp_path / "train.yaml"
    config.write_text(f"name: x\nrecipe: regression\ndata:\n  root: {random_plate}\n  targets: [lipids]\n")
    with pytest.raises(ConfigError, match="data.alignment: .*missing.csv does not exist"):
        load_config(config, values={"data.alignment": str(tmp_path / "missing.csv")})
    with pytest.raises(ConfigError, match="data.alignment"):
        load_config(config, values={"data.alignment": 3})


def test_targets_are_resampled_by_the_files_offsets_and_travel_to_the_bundle(tmp_path, random_plate):
    module = PlateDataModule(_config(random_plate, alignment=str(_offsets(tmp_path))), tmp_path / "run")
    module.prepare()
    module.setup()
    store = module.train_dataset.store
    field = store.fields[0]
    expected = to_brightfield_frame(field.read_target("lipids"), (1.5 * field.field, -0.5 * field.field))
    np.testing.assert_array_equal(store.arrays(0).targets[0], expected)
    assert (tmp_path / "run" / "offsets.csv").exists()
    assert module.alignment == {"magnification": "20x", "sites": {"lipids": {"F001": [1.5, -0.5],
                                                                             "F002": [3.0, -1.0]}}}
    metadata = BundleMetadata.from_dict({"architecture": "tiramisu", "targets": ["lipids"], "magnification": "20x",
                                         "normalization": module.normalization, "alignment": module.alignment})
    assert BundleMetadata.from_dict(metadata.to_dict()).alignment == module.alignment


def test_without_alignment_targets_are_as_stored(tmp_path, random_plate):
    module = PlateDataModule(_config(random_plate), tmp_path / "run")
    module.prepare()
    module.setup()
    store = module.train_dataset.store
    np.testing.assert_array_equal(store.arrays(0).targets[0], store.fields[0].read_target("lipids"))
    assert module.alignment is None and not (tmp_path / "run" / "offsets.csv").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"magnification": "40x"}, "offsets are for 40x, not 20x"),
    ({"fields": (1,)}, "no 20x lipids offset for site\\(s\\) F002"),
])
def test_mismatched_offsets_file_is_refused_in_one_line(tmp_path, random_plate, kwargs, message):
    path = _offsets(tmp_path, **kwargs)
    module = PlateDataModule(_config(random_plate, alignment=str(path)), tmp_path / "run")
    with pytest.raises(AlignmentError, match=message) as info:
        module.prepare()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_auto_estimates_once_and_a_resumed_run_reuses_the_file(tmp_path, random_plate):
    run = tmp_path / "run"
    module = PlateDataModule(_config(random_plate, alignment="auto"), run)
    with pytest.warns(UserWarning, match="alignment: 20x lipids: low confidence"):  # random images: no structure
        module.prepare()
    saved = OffsetTable.load(run / "offsets.csv")
    # every stain of the 4 fields, not only the lipids target: a stain no field registers with
    # confidence (nuclei) falls back on the field's other stains
    assert len(saved) == 12 and set(saved.stains) == {"nuclei", "lipids", "cytoplasm"}
    stamp = (run / "offsets.csv").stat().st_mtime_ns
    again = PlateDataModule(_config(random_plate, alignment="auto"), run)
    again.prepare()
    assert again.alignment == module.alignment and (run / "offsets.csv").stat().st_mtime_ns >= stamp
