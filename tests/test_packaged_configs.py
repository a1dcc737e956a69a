"""The shipped configs are package data: found by importlib.resources, by name, and inside a built wheel."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
import tomllib

from vstain.config import find_config, load_config, packaged_configs
from vstain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "vstain" / "configs"


def test_every_config_in_the_source_tree_is_declared_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vstain"]
    shipped = [p.relative_to(SOURCE.parent).as_posix() for p in SOURCE.rglob("*") if p.is_file()]
    assert len(shipped) == 30  # 15 reference recipes, 6 smoke configs, 9 CPU recipe configs
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_importlib_resources_resolve_the_configs():
    folder = files("vstain") / "configs"
    assert folder.joinpath("smoke", "nuclei.yaml").is_file()
    assert folder.joinpath("train", "C2_20x_gan.yaml").is_file()
    assert packaged_configs().joinpath("smoke", "all_stains.yaml").read_text() == \
        (SOURCE / "smoke" / "all_stains.yaml").read_text()


def test_configs_are_found_by_the_names_the_docs_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    expected = (SOURCE / "train" / "C1_20x.yaml").read_text()
    for name in ("configs/train/C1_20x.yaml", "train/C1_20x.yaml", "train/C1_20x"):
        assert find_config(name).read_text() == expected, name
    config = load_config("configs/smoke/nuclei.yaml", values={"data.root": str(tmp_path)})
    assert config.recipe == "lupi" and config.data.root == tmp_path
    own = tmp_path / "configs" / "train" / "C1_20x.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("name: mine\n")
    assert find_config("configs/train/C1_20x.yaml") == Path("configs/train/C1_20x.yaml")  # a file of yours wins
    for missing in ("configs/train/C9_20x.yaml", "../configs/smoke/nuclei.yaml", str(tmp_path / "none.yaml")):
        with pytest.raises(ConfigError, match="no such config file") as info:
            find_config(missing)
        assert isinstance(info.value, FileNotFoundError)


def test_values_are_set_exactly_after_overrides(tmp_path):
    weird = tmp_path / "plate #1: 2024-01-01"
    weird.mkdir()
    config = load_config("configs/smoke/lipids_pretrain.yaml", ["data.root=ignored", "trainer.max_epochs=2"],
                         values={"data.root": str(weird)})
    assert config.data.root == weird and config.trainer.max_epochs == 2


@pytest.mark.slow
def test_a_built_wheel_ships_the_configs_and_finds_them_when_installed(tmp_path):
    """Build the wheel from a copy of the sources, unpack it (a pure-Python install) and use it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("vstain-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert sum(n.startswith("vstain/configs/") and n.endswith(".yaml") for n in archive.namelist()) == 30
        archive.extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import vstain, sys; from pathlib import Path; from vstain.config import load_config\n"
        f"assert Path(vstain.__file__).is_relative_to({str(installed)!r}), vstain.__file__\n"
        "for run in ('nuclei', 'lipids_pretrain', 'lipids_gan', 'cytoplasm_pretrain', 'cytoplasm_gan'):\n"
        "    values = {'data.root': '.', **({'gan.pretrained': vstain.__file__} if 'gan' in run else {})}\n"
        "    load_config(f'configs/smoke/{run}.yaml', values=values)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
