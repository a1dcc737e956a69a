"""Every shipped config validates, and the reference configs say what the reference did."""

from __future__ import annotations

from pathlib import Path

import pytest

from vstain.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "vstain" / "configs"
ALL = sorted((CONFIGS / "train").glob("*.yaml")) + sorted((CONFIGS / "smoke").glob("*.yaml")) \
    + sorted((CONFIGS / "cpu").glob("*.yaml"))


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
    # CPU recipe runs are named apart from the reference's, so both can share a runs/ folder.
    assert config.name == path.stem + ("_cpu" if path.parent.name == "cpu" else "")


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


@pytest.mark.parametrize("mag", ["20x", "40x", "60x"])
def test_cpu_recipe_is_one_model_per_stain_with_the_quality_fixes(mag, tmp_path):
    from vstain.training.recipes import cpu_recipe, final_runs

    recipe = cpu_recipe(mag)
    assert final_runs(recipe) == {"nuclei": "nuclei", "lipids": "lipids", "cytoplasm": "cytoplasm"}
    configs = {step.name: _load(CONFIGS / "cpu" / Path(step.config).name, tmp_path) for step in recipe}
    for stain, config in configs.items():
        assert config.data.targets == [stain] and config.data.magnification == mag
        # the corrections of the quality work (docs/training.md): the challenge's pixel metric as the
        # loss scale, outputs starting at the data's level, percentile normalisation, a warm-up
        assert config.loss.median == "dataset" and config.model.output_init == "median"
        assert config.data.normalization == "percentile" and config.scheduler.warmup_epochs > 0
        assert config.validation.linear_baseline and config.trainer.limit_val_fields
        # test-time augmentation only where validation shows it helps (docs/quality.md)
        assert config.validation.tta == "auto"
    assert configs["nuclei"].recipe == "lupi" and configs["nuclei"].data.sampling == "mixed"
    assert configs["lipids"].loss.regression == configs["cytoplasm"].loss.regression == "median_mae"
    # one network size for every magnification; the crop grows with the magnification's pixel count
    sizes = {mag: _load(CONFIGS / "cpu" / f"C1_{mag}.yaml", tmp_path).data.crop_size for mag in ("20x", "40x", "60x")}
    assert sizes["20x"] <= sizes["40x"] <= sizes["60x"]
    # the nuclei network works at the scale of nuclei: a 10-15 um nucleus is 15-25 working pixels at
    # every magnification, and a crop holds several nuclei widths
    from vstain.vocabulary import PIXEL_SIZE_UM

    nuclei = configs["nuclei"]
    working_um = PIXEL_SIZE_UM[mag] * nuclei.model.args["downsample"]
    assert 14 <= 10 / working_um and 15 / working_um <= 26
    assert nuclei.data.crop_size / nuclei.model.args["downsample"] >= 128
    # every network of the recipe takes its crops whole: the crop is a multiple of what the network
    # pads to (2^poolings x downsample); 60x lipids and 40x / 60x cytoplasm run on 2x2-averaged pixels
    # (docs/quality.md)
    from vstain.models import build_model

    for config in configs.values():
        model = build_model(config.model.name, **config.model.args)
        assert config.data.crop_size % model.size_multiple == 0
    assert configs["lipids"].model.args.get("downsample", 1) == (2 if mag == "60x" else 1)
    assert configs["cytoplasm"].model.args.get("downsample", 1) == (1 if mag == "20x" else 2)


def test_reference_recipe_names_the_shipped_configs(tmp_path):
    from vstain.training.recipes import final_runs, reference_recipe

    recipe = reference_recipe("40x")
    assert [step.name for step in recipe] == ["C1_40x", "C2_40x_pretrain", "C2_40x_gan", "C3_40x_pretrain",
                                              "C3_40x_gan"]
    assert final_runs(recipe) == {"nuclei": "C1_40x", "lipids": "C2_40x_gan", "cytoplasm": "C3_40x_gan"}
    assert recipe[2].pretrained == "C2_40x_pretrain"
    for step in recipe:
        assert (CONFIGS / "train" / Path(step.config).name).is_file()
