"""Training recipes end to end on a tiny random plate: losses fall, GAN signs, resume, bundles."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_training import TINY, tiny_config

from vstain.config import load_config
from vstain.errors import ConfigError
from vstain.training.fit import fit, recipe_class


def _fixed_batch(module, recipe: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 7, 32, 32, generator=generator)
    target = (image[:, :1] * 0.5 + image[:, 1:2] * 0.3).clamp(0, 1)
    batch = {"image": image, "target": target}
    if recipe == "lupi":
        batch["mask"] = (target[:, 0] > 0.45).float()
    return batch


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, batch, length):
        self.batch, self.length = batch, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return {k: v[index % v.shape[0]] for k, v in self.batch.items()}


def _objective(module, batch, recipe):
    module.train()
    torch.manual_seed(0)
    with torch.no_grad():
        if recipe == "lupi":
            seg, image, sides = module.generator(batch["image"])
            return float(module.loss(seg, image.clamp(0, 1), sides, batch["target"], batch["mask"])[0])
        prediction = module.generator(batch["image"])
        if recipe == "gan":
            return float(module.median_mae(prediction, batch["target"]))
        return float(module.loss(prediction.clamp(0, 1), batch["target"]))


@pytest.mark.parametrize("recipe", ["regression", "lupi", "gan", "lupi-working-scale"])
def test_recipe_lowers_its_loss_on_a_fixed_batch(tmp_path, random_plate, recipe):
    extra = {}
    if recipe == "lupi-working-scale":  # trained on the working scale, judged at full resolution
        recipe, extra = "lupi", {"loss__scale": "working", "model__args": {**TINY, "downsample": 2}}
    config = load_config(tiny_config(tmp_path, random_plate, recipe, optimizer__lr=3e-3, **extra))
    normalization = {"input": {"kind": "minmax", "low": [0.0] * 7, "high": [65535.0] * 7,
                               "channels": [f"C04Z0{z}" for z in range(1, 8)]},
                     "targets": {t: {"kind": "minmax", "low": [0.0], "high": [65535.0], "channels": [t]}
                                 for t in config.data.targets},
                     "target_medians": {t: 20000.0 for t in config.data.targets}}
    module = recipe_class(recipe)(config.model_dump(mode="json"), normalization)
    batch = _fixed_batch(module, recipe)
    before = _objective(module, batch, recipe)
    d_before = copy.deepcopy(module.discriminator.state_dict()) if recipe == "gan" else None
    loader = torch.utils.data.DataLoader(_Repeat(batch, 2), batch_size=2)
    trainer = L.Trainer(max_steps=25, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, train_dataloaders=loader)
    after = _objective(module, batch, recipe)
    assert after < before, (before, after)
    if recipe == "gan":
        changed = [not torch.equal(v, module.discriminator.state_dict()[k]) for k, v in d_before.items()
                   if v.dtype.is_floating_point]
        assert any(changed), "the discriminator was not updated"


def test_gan_step_signs_discriminator_separates_and_generator_fools(tmp_path, random_plate):
    """One D step lowers L_D; one G step lowers L_G (each on the same batch)."""
    config = load_config(tiny_config(tmp_path, random_plate, "gan", gan__d_lr=1e-2, optimizer__lr=1e-2))
    normalization = {"input": {"kind": "minmax", "low": [0.0] * 7, "high": [1.0] * 7,
                               "channels": [f"C04Z0{z}" for z in range(1, 8)]},
                     "targets": {"lipids": {"kind": "minmax", "low": [0.0], "high": [1.0], "channels": ["lipids"]}},
                     "target_medians": {"lipids": 0.5}}
    module = recipe_class("gan")(config.model_dump(mode="json"), normalization)
    module.train()
    batch = _fixed_batch(module, "gan")
    x, y = batch["image"], batch["target"]

    def losses():
        torch.manual_seed(1)
        with torch.no_grad():
            fake = module.generator(x)
            real_score, fake_score = module._score(x, y), module._score(x, fake)
            return float(module.d_loss(real_score, fake_score)), float(module.g_loss(real_score, fake_score))

    d0, g0 = losses()
    opt_d = torch.optim.SGD(module.discriminator.parameters(), lr=0.05)
    for _ in range(3):
        with torch.no_grad():
            fake = module.generator(x)
        loss = module.d_loss(module._score(x, y), module._score(x, fake))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    d1, g1 = losses()
    assert d1 < d0 and g1 > g0  # the discriminator got better, so the generator's loss rose
    opt_g = torch.optim.SGD(module.generator.parameters(), lr=0.05)
    for _ in range(3):
        loss = module.g_loss(module._score(x, y), module._score(x, module.generator(x)))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    d2, g2 = losses()
    assert g2 < g1 and d2 > d1


def _weights(bundle: Path) -> dict[str, torch.Tensor]:
    return load_file(str(bundle))


def test_resume_from_epoch_boundary_equals_uninterrupted_run(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression", model__args={**TINY, "dropout": 0.2})
    full = fit(load_config(path, ["trainer.max_epochs=2", "validation.monitor=train/loss_epoch"]), tmp_path / "full")
    fit(load_config(path, ["trainer.max_epochs=1", "validation.monitor=train/loss_epoch"]), tmp_path / "split")
    resumed = fit(load_config(path, ["trainer.max_epochs=2", "validation.monitor=train/loss_epoch"]),
                  tmp_path / "split", resume=True)
    a = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=0, msg=key)
    assert full.exists() and resumed.exists()


class _Killed(RuntimeError):
    pass


class _Crash(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.at_step:
            raise _Killed("simulated kill")


def test_resume_mid_epoch_reaches_the_same_step_count(tmp_path, random_plate, monkeypatch):
    path = tiny_config(tmp_path, random_plate, "regression",
                   data__samples_per_epoch=8, trainer__checkpoint_every_n_steps=2, trainer__max_epochs=2)
    original = L.Trainer.__init__

    def crashing(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), _Crash(5)]
        original(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", crashing)
    with pytest.raises(_Killed):
        fit(load_config(path), tmp_path / "run")
    monkeypatch.setattr(L.Trainer, "__init__", original)
    saved = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 5 - saved <= 2  # lost no more than the steps since the last save
    fit(load_config(path), tmp_path / "run", resume=True)
    final = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert final == 8  # 2 epochs x 4 steps, as an uninterrupted run


def test_exported_bundle_loads_and_predicts(tmp_path, random_plate):
    from vstain.inference.bundle import load_model

    bundle = fit(load_config(tiny_config(tmp_path, random_plate, "lupi")), tmp_path / "run")
    loaded = load_model(bundle)
    assert loaded.metadata.targets == ("nuclei",)
    # chosen on validation: the best checkpoint's validation score is recorded, not a training loss
    assert loaded.metadata.validation["checkpoint"] == "best.ckpt"
    assert 0 <= loaded.metadata.validation["val/pixel_rel_mae"] < float("inf")
    seg, image = loaded.model(torch.rand(1, 7, 48, 40))
    assert image.shape == (1, 1, 48, 40) and seg.shape == (1, 2, 48, 40)
    run = tmp_path / "run"
    for name in ("config.resolved.yaml", "environment.json", "stats.json", "split.csv", "summary.json",
                 "linear_baseline.json"):
        assert (run / name).is_file(), name
    assert list((run / "logs" / "panels").glob("*.png"))
    environment = json.loads((run / "environment.json").read_text())
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["threads"] == torch.get_num_threads()
    # The bundle and the run summary both carry the comparison with the linear baseline.
    summary = json.loads((run / "summary.json").read_text())["validation"]
    linear = json.loads((run / "linear_baseline.json").read_text())["pixel_rel_mae"]["nuclei"]
    assert loaded.metadata.validation["linear_baseline"] == {"nuclei": pytest.approx(linear)}
    assert summary["per_target"]["nuclei"]["linear"] == pytest.approx(linear)
    best = summary["per_target"]["nuclei"]["model"]
    assert best == pytest.approx(loaded.metadata.validation["val/pixel_rel_mae"])  # one target: mean = itself
    assert loaded.metadata.validation["beats_linear"] is (best < linear)


def test_config_errors_are_one_readable_line(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression")
    with pytest.raises(ConfigError, match=r"data\.crop_size: Input should be a valid integer"):
        load_config(path, ["data.crop_size=big"])
    with pytest.raises(ConfigError, match=r"trainer\.epochs: unknown key"):
        load_config(path, ["trainer.epochs=3"])
    with pytest.raises(ConfigError, match=r"data\.root: /nowhere does not exist"):
        load_config(path, ["data.root=/nowhere"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_cli_train_error_output_is_short(tmp_path, random_plate, capsys):
    from vstain.cli import main

    path = tiny_config(tmp_path, random_plate, "regression")
    assert main(["train", "-c", str(path), "--set", "model.args.nonsense=1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonsense" in err[0]


def test_learning_rate_schedule_cosine_restarts_and_finetune(tmp_path, random_plate):
    config = load_config(tiny_config(tmp_path, random_plate, "lupi",
                                 scheduler__name="cosine_warm_restarts", finetune__epochs=2,
                                 trainer__max_epochs=6))
    module = recipe_class("lupi")(config.model_dump(mode="json"),
                                  {"input": {"kind": "minmax", "low": [0.0] * 7, "high": [1.0] * 7,
                                             "channels": [f"C04Z0{z}" for z in range(1, 8)]},
                                   "targets": {"nuclei": {"kind": "minmax", "low": [0.0], "high": [1.0],
                                                          "channels": ["nuclei"]}},
                                   "target_medians": {"nuclei": 0.1}})
    module.steps_per_epoch = lambda: 10
    factors = [module.lr_factor(step) for step in range(0, 80)]
    assert factors[0] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(0.5)          # half-way through the first 2-epoch cycle
    assert factors[19] < 0.01 and factors[20] == pytest.approx(1.0)  # warm restart at epoch 2
    assert factors[40] == pytest.approx(0.5)          # second cycle lasts 4 epochs (2..6)
    assert factors[60] == pytest.approx(1e-5 / 1e-3)  # fine-tune stage at constant 1e-5


def test_learning_rate_warmup_then_one_cosine(tmp_path, random_plate):
    config = load_config(tiny_config(tmp_path, random_plate, "regression", scheduler__name="cosine",
                                 scheduler__warmup_epochs=1.0, trainer__max_epochs=5))
    module = recipe_class("regression")(config.model_dump(mode="json"), {
        "input": {"kind": "minmax", "low": [0.0] * 7, "high": [1.0] * 7,
                  "channels": [f"C04Z0{z}" for z in range(1, 8)]},
        "targets": {"lipids": {"kind": "minmax", "low": [0.0], "high": [1.0], "channels": ["lipids"]}},
        "target_medians": {"lipids": 0.1}})
    module.steps_per_epoch = lambda: 10
    factors = [module.lr_factor(step) for step in range(0, 50)]
    assert factors[0] == pytest.approx(0.1) and factors[4] == pytest.approx(0.5)  # linear warm-up over 10 steps
    assert factors[10] == pytest.approx(1.0)                                   # cosine starts at the full rate
    assert factors[30] == pytest.approx(0.5)                                   # half-way through epochs 1..5
    assert factors[49] < 0.01 and module.lr_factor(50) == 0.0                  # ends at eta_min, then stops
    assert module.has_schedule()
    assert not recipe_class("regression")(load_config(tiny_config(tmp_path, random_plate, "regression")).model_dump(
        mode="json"), module.normalization).has_schedule()


class _RawWeights(L.Callback):
    """Records the generator's raw weights after every optimiser step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, *args):
        self.steps.append({k: v.detach().clone() for k, v in module.generator.state_dict().items()})


@pytest.mark.parametrize("recipe", ["regression", "lupi"])
def test_ema_decay_validates_checkpoints_and_exports_the_moving_average(tmp_path, random_plate, monkeypatch, recipe):
    decay = 0.5
    path = tiny_config(tmp_path, random_plate, recipe, trainer__ema_decay=decay, trainer__max_epochs=2)
    raw = _RawWeights()
    original = L.Trainer.__init__

    def recording(self, *args, **kwargs):
        # first, so it sees the step's weights before the averaging callback updates its copy
        kwargs["callbacks"] = [raw, *kwargs.get("callbacks", [])]
        original(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", recording)
    bundle = fit(load_config(path, ["validation.monitor=train/loss_epoch"]), tmp_path / "run")
    assert len(raw.steps) == 4
    # AveragedModel: the first update copies, then avg <- decay * avg + (1 - decay) * new
    expected = dict(raw.steps[0])
    for step in raw.steps[1:]:
        expected = {k: (decay * expected[k] + (1 - decay) * v) if v.is_floating_point() else v
                    for k, v in step.items()}
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    averaged = {k[len("generator."):]: v for k, v in last["state_dict"].items() if k.startswith("generator.")}
    current = {k[len("generator."):]: v for k, v in last["current_model_state"].items() if k.startswith("generator.")}
    name = next(k for k, v in expected.items() if v.is_floating_point() and "weight" in k)
    torch.testing.assert_close(averaged[name], expected[name])
    torch.testing.assert_close(current[name], raw.steps[-1][name])
    assert not torch.equal(averaged[name], current[name])
    best = torch.load(tmp_path / "run/checkpoints/best.ckpt", weights_only=True)
    exported = _weights(bundle)
    for key, value in best["state_dict"].items():
        if key.startswith("generator."):
            torch.testing.assert_close(exported[key[len("generator."):]], value, rtol=0, atol=0)


def test_ema_run_resumes_like_an_uninterrupted_one(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression", trainer__ema_decay=0.7)
    overrides = ["validation.monitor=train/loss_epoch"]
    fit(load_config(path, [*overrides, "trainer.max_epochs=2"]), tmp_path / "full")
    fit(load_config(path, [*overrides, "trainer.max_epochs=1"]), tmp_path / "split")
    fit(load_config(path, [*overrides, "trainer.max_epochs=2"]), tmp_path / "split", resume=True)
    a = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=True)
    for part in ("state_dict", "current_model_state"):
        for key, value in a[part].items():
            torch.testing.assert_close(value, b[part][key], rtol=0, atol=0, msg=f"{part} {key}")


def test_working_scale_loss_compares_block_means_and_majority_masks(tmp_path, random_plate, monkeypatch):
    path = tiny_config(tmp_path, random_plate, "lupi", loss__scale="working", model__args={**TINY, "downsample": 2})
    config = load_config(path)
    normalization = {"input": {"kind": "minmax", "low": [0.0] * 7, "high": [65535.0] * 7,
                               "channels": [f"C04Z0{z}" for z in range(1, 8)]},
                     "targets": {"nuclei": {"kind": "minmax", "low": [0.0], "high": [65535.0], "channels": ["nuclei"]}},
                     "target_medians": {"nuclei": 20000.0}}
    module = recipe_class("lupi")(config.model_dump(mode="json"), normalization)
    seen = {}
    real = module.loss.forward

    def recording(seg, image, sides, target, mask):
        seen.update(seg=seg.shape, image=image.shape, target=target, mask=mask)
        return real(seg, image, sides, target, mask)

    monkeypatch.setattr(module.loss, "forward", recording)
    target = torch.zeros(2, 1, 32, 32)  # two crops: BatchNorm's 1x1 bottleneck needs more than one value
    target[0, 0, 0, 0:2] = 1.0  # block (0, 0): mean 0.5
    mask = torch.zeros(2, 32, 32)
    mask[0, 0:2, 0:2] = 1  # block (0, 0): all nucleus
    mask[0, 0, 2] = 1  # block (0, 1): a quarter nucleus, so background
    mask[0, 2:4, 4] = 1  # block (1, 2): half nucleus, so nucleus
    module.train()
    module.training_step({"image": torch.rand(2, 7, 32, 32), "target": target, "mask": mask}, 0)
    assert seen["seg"] == (2, 2, 16, 16) and seen["image"] == (2, 1, 16, 16)
    expected_target = torch.zeros(2, 1, 16, 16)
    expected_target[0, 0, 0, 0] = 0.5
    torch.testing.assert_close(seen["target"], expected_target)
    expected_mask = torch.zeros(2, 16, 16)
    expected_mask[0, 0, 0] = expected_mask[0, 1, 2] = 1
    torch.testing.assert_close(seen["mask"], expected_mask)


def test_working_scale_loss_needs_the_lupi_recipe_and_whole_blocks(tmp_path, random_plate):
    with pytest.raises(ConfigError, match="loss.scale: 'working' is for the lupi recipe"):
        load_config(tiny_config(tmp_path, random_plate, "regression", loss__scale="working"))
    path = tiny_config(tmp_path, random_plate, "lupi", loss__scale="working", model__args={**TINY, "downsample": 3})
    with pytest.raises(ConfigError, match="data.crop_size: 32 is not a multiple of model.args.downsample=3"):
        load_config(path)


def test_ema_decay_is_refused_for_the_gan_recipe(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "gan", trainer__ema_decay=0.9)
    with pytest.raises(ConfigError, match="trainer.ema_decay"):
        load_config(path)


def test_intensity_map_is_fitted_on_the_validation_fields_and_travels_in_the_bundle(tmp_path, random_plate):
    from vstain.inference.bundle import load_model
    from vstain.inference.intensity_map import IntensityMap
    from vstain.inference.predictor import Predictor
    from vstain.plate.index import index_plate

    path = tiny_config(tmp_path, random_plate, "regression", validation__intensity_map="quantiles")
    bundle = fit(load_config(path), tmp_path / "run")
    stored = load_model(bundle).metadata.intensity_map
    assert set(stored) == {"lipids"} and stored["lipids"]["fields"] == 1  # holdout_fields: 1
    mapping = IntensityMap.from_dict(stored["lipids"])
    # Fitted on the validation field: its mapped raw prediction has the real stain's quantiles.
    split = (tmp_path / "run" / "split.csv").read_text()  # rows: magnification,well,field,subset
    field = next(f for f in index_plate(random_plate).fields if f"{f.well},{f.field},validation" in split)
    raw = Predictor([bundle], intensity_map=False).predict_variants(field.read_brightfield())["lipids"][0]
    real = field.read_target("lipids").astype(float)
    mapped = Predictor([bundle]).predict_field(field.read_brightfield())["lipids"]
    np.testing.assert_array_equal(mapped, np.clip(np.rint(mapping(raw)), 0, 65535))
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(mapped, q) == pytest.approx(np.quantile(real, q), abs=2.0)
    assert not np.array_equal(mapped, raw)


def test_intensity_map_setting_is_validated(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression")
    with pytest.raises(ConfigError, match=r"validation\.intensity_map"):
        load_config(path, ["validation.intensity_map=histogram"])


@pytest.mark.parametrize(("overrides", "step_overrides", "says"), [
    (("seed=3",), {}, "override seed=3: seed is set in every step"),
    (("trainer.max_epochs=1",), {"lipids": ("data.root=other",)}, "override of step lipids: data.root=other"),
    ((), {"cytoplasm": (" data.split = s.csv",)}, "data.split is set in every step"),
    ((), {"nuclei": ("gan.pretrained=x.safetensors",)}, "gan.pretrained is set in every step"),
])
def test_train_recipe_refuses_overrides_of_what_it_sets_itself(tmp_path, overrides, step_overrides, says):
    # The recipe sets the plate, split, magnification and seed of every step from its arguments; an
    # override of one would be silently overwritten (or contradict the argument): refused first.
    from vstain.training.recipes import cpu_recipe, train_recipe

    with pytest.raises(ConfigError, match=says):
        train_recipe(cpu_recipe("20x"), plate=tmp_path / "plate", split=tmp_path / "split.csv",
                     runs_dir=tmp_path / "runs", magnification="20x", overrides=overrides,
                     step_overrides=step_overrides)
    assert not (tmp_path / "runs").exists()
