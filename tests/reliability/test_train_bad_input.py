"""`vstain train`: resuming from bad checkpoints, training history, leftovers (issue 16 items 6, 7, 9; issue 12).

A checkpoint carrying a pickled object must be refused with one line and its payload must never
run, both in vstain's own check and in Lightning's loading of ``ckpt_path``.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vstain.errors import ConfigError

_spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
write_random_plate = _root_conftest.write_random_plate

TINY = {"init_filters": 8, "down_blocks": [1, 1, 1, 1], "up_blocks": [1, 1, 1, 1],
        "bottleneck_layers": 1, "growth_rate": 4, "dropout": 0.0}


def _config(tmp_path: Path, plate: Path, **trainer) -> Path:
    config = {"name": "tiny", "recipe": "regression", "seed": 7,
              "data": {"root": str(plate), "targets": ["lipids"], "crop_size": 32, "batch_size": 2,
                       "samples_per_epoch": 4, "holdout_fields": 1},
              "model": {"name": "tiramisu", "args": dict(TINY)},
              "trainer": {"max_epochs": 1, "progress_bar": False, "log_every_n_steps": 1, **trainer}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def leave_a_mark(marker: str) -> None:
    """The "malicious" code: proves it ran by creating ``marker``."""
    Path(marker).touch()


class _Payload:
    """Unpickling this calls :func:`leave_a_mark`, as a malicious checkpoint would run its code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (leave_a_mark, (str(self.marker),))


def _lightning_like(path: Path, payload: object) -> Path:
    torch.save({"epoch": 0, "global_step": 0, "state_dict": {}, "loops": {}, "hyper_parameters": {"x": payload}},
               path)
    return path


@pytest.fixture
def bad_checkpoints(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "bad"
    folder.mkdir()
    garbage = folder / "garbage.ckpt"
    garbage.write_bytes(np.random.default_rng(0).bytes(2048))
    empty = folder / "empty.ckpt"
    empty.write_bytes(b"")
    plain_pickle = folder / "plain.ckpt"
    plain_pickle.write_bytes(pickle.dumps({"state_dict": {}}))
    not_lightning = folder / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, not_lightning)
    return {"garbage": garbage, "empty": empty, "plain pickle": plain_pickle, "not lightning": not_lightning}


@pytest.mark.parametrize("kind", ["garbage", "empty", "plain pickle", "not lightning"])
def test_resume_from_a_file_that_is_no_checkpoint(tmp_path, random_plate, bad_checkpoints, cli, one_line_error, kind):
    path = bad_checkpoints[kind]
    before = path.read_bytes()
    code, out, err = cli("train", "-c", _config(tmp_path, random_plate), "--out", tmp_path / "run", "--resume", path)
    assert code == 2 and out == ""
    one_line_error(err, path, "--resume", "vstain train")
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    assert path.read_bytes() == before


def test_resume_refuses_a_pickled_object_and_never_runs_it(tmp_path, random_plate, cli, one_line_error, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # an unsafe default must not matter
    marker = tmp_path / "payload-ran"
    path = _lightning_like(tmp_path / "evil.ckpt", _Payload(marker))
    code, _, err = cli("train", "-c", _config(tmp_path, random_plate), "--out", tmp_path / "run", "--resume", path)
    assert code == 2
    line = one_line_error(err, path, "pickled Python object", "never loads")
    assert "leave_a_mark" in line  # names what it refused
    assert not marker.exists()


def test_lightnings_own_checkpoint_loading_is_weights_only(tmp_path, random_plate, monkeypatch):
    """Even past vstain's own check, ``trainer.fit(ckpt_path=...)`` loads weights-only, also where
    the environment asks torch for unsafe loads by default."""
    from vstain.config import load_config
    from vstain.training import fit as fit_module

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    marker = tmp_path / "payload-ran"
    path = _lightning_like(tmp_path / "evil.ckpt", _Payload(marker))
    if hasattr(fit_module, "_ResumePoint"):  # skip vstain's own check: Lightning alone must refuse
        monkeypatch.setattr(fit_module._ResumePoint, "read", classmethod(lambda cls, p: cls(p, {}, None, 0)))
        monkeypatch.setattr(fit_module._ResumePoint, "check_fits", lambda self, module, config: None)
    with pytest.raises(pickle.UnpicklingError):
        fit_module.fit(load_config(_config(tmp_path, random_plate)), tmp_path / "run", resume=path)
    assert not marker.exists()


def test_any_garbage_is_one_config_error(tmp_path):
    from vstain.training.fit import load_checkpoint

    rng = np.random.default_rng(1)
    path = tmp_path / "garbage.ckpt"
    for size in rng.integers(1, 4096, 200):
        path.write_bytes(rng.bytes(int(size)))
        with pytest.raises(ConfigError, match="garbage.ckpt: not a PyTorch checkpoint"):
            load_checkpoint(path)


def test_load_checkpoint_refuses_payloads_with_a_config_error(tmp_path):
    from vstain.training.fit import load_checkpoint

    marker = tmp_path / "payload-ran"
    with pytest.raises(ConfigError, match="pickled Python object"):
        load_checkpoint(_lightning_like(tmp_path / "evil.ckpt", _Payload(marker)))
    assert not marker.exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-epoch run, and the same run stopped after epoch 1 then resumed (plus its 1-epoch copy)."""
    from vstain.config import load_config
    from vstain.training.fit import fit

    root = tmp_path_factory.mktemp("runs")
    plate = write_random_plate(root / "plate")  # tests/conftest.py
    config = _config(root, plate)
    umask = os.umask(0o022)
    try:
        fit(load_config(config, ["trainer.max_epochs=2"]), root / "full")
        fit(load_config(config), root / "split")
        one_epoch = (root / "split" / "logs" / "metrics.csv").read_text()
        (root / "one-epoch.ckpt").write_bytes((root / "split" / "checkpoints" / "last.ckpt").read_bytes())
        fit(load_config(config, ["trainer.max_epochs=2"]), root / "split", resume=True)
    finally:
        os.umask(umask)
    return {"root": root, "plate": plate, "config": config, "one_epoch_metrics": one_epoch}


def test_resume_keeps_the_training_history(runs):
    full = (runs["root"] / "full" / "logs" / "metrics.csv").read_text()
    resumed = (runs["root"] / "split" / "logs" / "metrics.csv").read_text()
    assert resumed.startswith(runs["one_epoch_metrics"])  # nothing logged before the stop was lost
    assert resumed == full  # and nothing is doubled: as if the run had never stopped
    epochs = {line.split(",")[0] for line in resumed.splitlines()[1:]}
    assert epochs == {"0", "1"}


def test_resume_with_another_architecture_is_one_line(runs, cli, one_line_error, tmp_path):
    checkpoint = runs["root"] / "one-epoch.ckpt"
    code, _, err = cli("train", "-c", runs["config"], "--out", tmp_path / "other", "--resume", checkpoint,
                       "--set", "model.args.growth_rate=8")
    assert code == 2
    one_line_error(err, checkpoint, "model.args", "resume with the config that wrote it")
    assert not (tmp_path / "other").exists()


def test_bundle_has_the_permissions_of_every_other_output(runs):
    run = runs["root"] / "full"
    expected = 0o666 & ~0o022
    assert (run / "model.safetensors").stat().st_mode & 0o777 == expected
    assert (run / "config.resolved.yaml").stat().st_mode & 0o777 == expected


def test_a_failed_run_removes_the_folder_it_created_only(tmp_path, cli, one_line_error):
    empty_plate = tmp_path / "empty-plate"
    empty_plate.mkdir()
    config = _config(tmp_path, empty_plate)
    code, _, err = cli("train", "-c", config, "--out", tmp_path / "new-run")
    assert code == 2
    one_line_error(err, empty_plate)
    assert not (tmp_path / "new-run").exists()
    existing = tmp_path / "old-run"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert cli("train", "-c", config, "--out", existing)[0] == 2
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("value", [0, 1234])
def test_a_constant_or_empty_target_is_refused_before_training(tmp_path, cli, one_line_error, snapshot, value):
    """Issue 11, bad input: a target with nothing to learn -> one line before training; the plate untouched."""
    from vstain.plate.tiff import write_tiff

    plate = write_random_plate(tmp_path / "plate")
    for path in (plate / "20x_images").glob("*C02.tif"):
        write_tiff(path, np.full((64, 80), value, np.uint16))
    before = snapshot(plate)
    code, _, err = cli("train", "-c", _config(tmp_path, plate), "--out", tmp_path / "run")
    assert code == 2
    line = one_line_error(err, plate, "lipids", "constant", "data.targets")
    assert f"every pixel {value}" in line
    assert not (tmp_path / "run").exists() and snapshot(plate) == before
