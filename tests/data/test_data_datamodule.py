"""The DataModule's split handling: validation fields, old split files, unknown fields, all before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from vstain.cli import main
from vstain.config import TrainConfig
from vstain.data.datamodule import PlateDataModule
from vstain.errors import SplitError


def _config(plate: Path, **data) -> TrainConfig:
    return TrainConfig.model_validate({
        "name": "split_check", "recipe": "regression",
        "data": {"root": str(plate), "targets": ["lipids"], "crop_size": 32, **data},
    })


def _split(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "split.csv"
    path.write_text("magnification,well,field,subset\n" + rows)
    return path


def test_train_and_validation_come_from_their_subsets_and_test_is_never_read(tmp_path, random_plate):
    split = _split(tmp_path, "20x,B02,1,train\n20x,B02,2,train\n20x,B03,1,validation\n20x,B03,2,test\n")
    module = PlateDataModule(_config(random_plate, split=str(split)), tmp_path / "run")
    module.prepare()
    assert [f.key for f in module.train_fields] == [("20x", "B02", 1), ("20x", "B02", 2)]
    assert [f.key for f in module.val_fields] == [("20x", "B03", 1)]
    assert (tmp_path / "run" / "split.csv").read_text() == split.read_text()


def test_random_holdout_is_validation(tmp_path, random_plate):
    module = PlateDataModule(_config(random_plate, holdout_fields=1), tmp_path / "run")
    module.prepare()
    assert len(module.train_fields) == 3 and len(module.val_fields) == 1
    assert (tmp_path / "run" / "split.csv").read_text().count(",validation\n") == 1


@pytest.mark.parametrize("rows, message", [
    ("20x,B02,1,train\n20x,B02,2,train\n20x,B03,1,test\n",
     "no validation field at 20x, only train and test: .* rename test to validation for those fields"),
    ("20x,B02,1,train\n20x,B03,1,calibration\n", "no validation field at 20x; training needs at least one"),
    ("20x,B02,1,train\n20x,B03,1,validation\n20x,H09,3,train\n20x,B09,1,test\n",
     r"2 field\(s\) of the split are not on the plate: 20x B09 F001, 20x H09 F003$"),
])
def test_unusable_splits_are_refused_before_anything_is_written(tmp_path, random_plate, rows, message):
    split = _split(tmp_path, rows)
    module = PlateDataModule(_config(random_plate, split=str(split)), tmp_path / "run")
    with pytest.raises(SplitError, match=f"{split}: {message}"):
        module.prepare()
    assert not (tmp_path / "run").exists()


def test_holding_out_nothing_is_refused(tmp_path, random_plate):
    module = PlateDataModule(_config(random_plate, holdout_fields=0), tmp_path / "run")
    with pytest.raises(SplitError, match="data.holdout_fields: no validation field at 20x"):
        module.prepare()


def test_train_command_prints_one_line_for_an_old_split(tmp_path, random_plate, capsys):
    split = _split(tmp_path, "20x,B02,1,train\n20x,B02,2,train\n20x,B03,1,test\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"name: old\nrecipe: regression\n"
                      f"data: {{root: {random_plate}, targets: [lipids], split: {split}}}\n")
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rename test to validation" in err
