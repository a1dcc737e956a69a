"""Every shipped config validates, and the reference configs say what the reference did."""

from __future__ import annotations

from pathlib import Path

import pytest

from vstain.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "vstain" / "configs"
ALL = sorted((CONFIGS / "train").glob("*.yaml")) + sorted((CONFIGS / "smoke").glob("*.yaml"))


def _load(path: Path, tmp_path: Path):
    bundle = tmp_path / "pretrained.safetensors"
    bundle.write_bytes(b"")
    overrides = [f"data.root={tmp_path}"]
    if "gan" in path.stem:
        overrides.append(f"gan.pretrained={bundle}")
    return load_config(path, overrides)


def test_nine_reference_models_are_shipped():
    names = {p.stem for p in (CONFIGS / "train").glob("*.yaml")}
    for mag in ("20x", "40x", "60x"):
        assert f"C1_{mag}" in names
        for channel in ("C2", "C3"):
            assert {f"{channel}_{mag}_pretrain", f"{channel}_{mag}_gan"} <= names
    smoke = {p.stem for p in (CONFIGS / "smoke").glob("*.yaml")}
    assert smoke == {"nuclei", "lipids_pretrain", "lipids_gan", "cytoplasm_pretrain", "cytoplasm_gan", "all_stains"}


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_validates(path, tmp_path):
    config = _load(path, tmp_path)
    assert config.name == path.stem


@pytest.mark.parametrize("mag,epochs,holdout", [("20x", 20, 3), ("40x", 30, 4), ("60x", 60, 6)])
def test_nuclei_recipe_follows_the_report(mag, epochs, holdout, tmp_path):
    config = _load(CONFIGS / "train" / f"C1_{mag}.yaml", tmp_path)
    assert (config.recipe, config.model.name, config.data.magnification) == ("lupi", "lupi", mag)
    assert config.trainer.max_epochs == epochs and config.data.holdout_fields == holdout
    assert (config.finetune.epochs, config.finetune.lr) == (10, 1e-5)
    assert (config.optimizer.name, config.optimizer.lr, config.optimizer.weight_decay) == ("adamw", 1e-3, 1e-3)
    assert (config.scheduler.name, config.scheduler.t0, config.scheduler.t_mult) == ("cosine_warm_restarts", 2, 2)
    assert config.data.batch_size == 6 and config.trainer.gradient_clip == 1.0


@pytest.mark.parametrize("channel,gradient,epochs", [("C2", 10.0, 1000), ("C3", 100.0, 600)])
def test_gan_recipes_follow_the_report(channel, gradient, epochs, tmp_path):
    config = _load(CONFIGS / "train" / f"{channel}_20x_gan.yaml", tmp_path)
    assert (config.loss.adversarial, config.loss.gradient, config.loss.median_mae) == (0.01, gradient, 1.0)
    assert config.optimizer.lr == 1e-4 and config.gan.d_lr == 1e-6 and config.gan.pool_size == 50
    assert config.trainer.max_epochs == epochs and config.trainer.gradient_clip == 1.0
    pretrain = _load(CONFIGS / "train" / f"{channel}_20x_pretrain.yaml", tmp_path)
    assert pretrain.loss.regression == "log_squared" and pretrain.trainer.max_epochs == 200
    assert pretrain.optimizer.lr == 1e-4 and pretrain.data.crop_size == 512


def test_gan_config_without_pretrained_generator_says_what_to_do(tmp_path):
    from vstain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gan\.pretrained: .* does not exist \(train the pretrain config first"):
        load_config(CONFIGS / "train" / "C2_20x_gan.yaml", [f"data.root={tmp_path}"])
