"""``--set key=value``: text stays text where the schema wants text (issue 16, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vstain.config import TrainConfig, apply_overrides, load_config
from vstain.errors import ConfigError


@pytest.fixture
def config_file(tmp_path, random_plate) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "recipe": "regression",
                                    "data": {"root": str(random_plate), "targets": ["lipids"]}}))
    return path


@pytest.mark.parametrize("folder", ["run #1", "2024-01-01", "2024", "null", "0x10", "1:20", "yes"])
def test_paths_are_taken_as_typed(tmp_path, config_file, random_plate, monkeypatch, folder):
    """A plate folder named like a YAML comment, date, number, null or bool is still that folder."""
    (tmp_path / "plates").mkdir()
    random_plate.rename(tmp_path / "plates" / folder)
    monkeypatch.chdir(tmp_path / "plates")
    config = load_config(config_file, [f"data.root={folder}"])
    assert config.data.root == Path(folder) and config.data.root.is_dir()


def test_a_missing_path_is_named_whole(config_file, cli, one_line_error):
    code, _, err = cli("train", "-c", config_file, "--set", "data.root=plates/run #1")
    assert code == 2
    one_line_error(err, "data.root", "plates/run #1 does not exist")


@pytest.mark.parametrize(("override", "key", "expected"), [
    ("trainer.max_epochs=3", ("trainer", "max_epochs"), 3),
    ("optimizer.lr=1e-4", ("optimizer", "lr"), 1e-4),
    ("optimizer.lr=3", ("optimizer", "lr"), 3.0),
    ("trainer.deterministic=false", ("trainer", "deterministic"), False),
    ("trainer.precision=32", ("trainer", "precision"), "32"),
    ("trainer.devices=2", ("trainer", "devices"), 2),
    ("trainer.devices=auto", ("trainer", "devices"), "auto"),
    ("name=2024-01-01", ("name",), "2024-01-01"),
    ("name=run #1", ("name",), "run #1"),
    ("data.samples_per_epoch=010", ("data", "samples_per_epoch"), 10),
    ("data.samples_per_epoch=null", ("data", "samples_per_epoch"), None),
    ("data.split=null", ("data", "split"), None),
    ("trainer.gradient_clip=null", ("trainer", "gradient_clip"), None),
    ("data.targets=[lipids, cytoplasm]", ("data", "targets"), ["lipids", "cytoplasm"]),
    ("optimizer.betas=[0.5, 0.9]", ("optimizer", "betas"), (0.5, 0.9)),
    ("data.holdout_wells=[B02]", ("data", "holdout_wells"), ["B02"]),
    ("model.args.growth_rate=4", ("model", "args", "growth_rate"), 4),
    ("model.args={growth_rate: 4, dropout: 0.1}", ("model", "args"), {"growth_rate": 4, "dropout": 0.1}),
])
def test_numbers_bools_nulls_and_lists_still_work_where_the_schema_wants_them(config_file, override, key, expected):
    config = load_config(config_file, [override]).model_dump()
    value = config
    for part in key:
        value = value[part]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("override", "key"), [
    ("seed=0x10", "seed"),  # YAML 1.1 would silently read 16
    ("trainer.log_every_n_steps=1:20", "trainer.log_every_n_steps"),  # YAML 1.1: 80
    ("trainer.max_epochs=three", "trainer.max_epochs"),
])
def test_values_of_the_wrong_kind_are_one_line_naming_the_key(config_file, cli, one_line_error, override, key):
    code, _, err = cli("train", "-c", config_file, "--set", override)
    assert code == 2
    one_line_error(err, f"{key}: ", override.split("=", 1)[1])


def test_without_a_schema_only_yaml_core_scalars_are_converted():
    data = apply_overrides({}, ["a=3", "b=2024-01-01", "c=x #1", "d=010", "e=true", "f=null", "g=[1, 2]"])
    assert data == {"a": 3, "b": "2024-01-01", "c": "x #1", "d": 10, "e": True, "f": None, "g": [1, 2]}
    assert apply_overrides({}, ["name=2024"], schema=TrainConfig) == {"name": "2024"}


def test_a_broken_list_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"--set data\.targets: .* not a valid YAML list"):
        apply_overrides({}, ["data.targets=[lipids"], schema=TrainConfig)
