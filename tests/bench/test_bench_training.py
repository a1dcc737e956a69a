"""The training benchmark times the recipe modules ``vstain train`` runs, through their training_step."""

from __future__ import annotations

import functools

import pytest
import torch

from vstain.bench.run import format_table, run_benchmark
from vstain.bench.sizes import BenchSizes
from vstain.bench.training import RECIPES, bench_training, recipe_module, training_settings
from vstain.training.gan import GanModule
from vstain.training.lupi import LupiModule
from vstain.training.regression import RegressionModule

SIZES = BenchSizes(fields=((48, 64),), reference_batch=2, tile_batch=2, gan_batch=2, lupi_batch=1,
                   regression_batch=1, crop=32, train_steps=1, repeats=1)
CPU = torch.device("cpu")


def _record(monkeypatch, cls, name, calls):
    original = getattr(cls, name)

    @functools.wraps(original)
    def recorded(self, *args, **kwargs):
        calls.append((type(self).__name__, name, self.cfg.trainer.channels_last, self.cfg.model.args.get("efficient")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, recorded)


def test_training_rows_run_the_recipe_modules_training_step(monkeypatch):
    calls: list[tuple] = []
    for cls in (GanModule, LupiModule, RegressionModule):
        _record(monkeypatch, cls, "training_step", calls)
    _record(monkeypatch, GanModule, "clip_gradients", calls)
    _record(monkeypatch, LupiModule, "clip_gradients", calls)
    rows = bench_training(device=CPU, sizes=SIZES, tiny=True, log=lambda _: None)
    settings = training_settings(CPU)
    assert [(r["recipe"], r["settings"]) for r in rows] == [(recipe.label, s.label) for recipe in RECIPES
                                                            for s in settings]
    assert all(r["error"] is None and r["images_per_s"] > 0 for r in rows), rows
    assert [r["module"] for r in rows] == ["GanModule"] * 3 + ["LupiModule"] * 3 + ["RegressionModule"] * 3
    assert [r["batch"] for r in rows] == [2] * 3 + [1] * 6
    steps = [c for c in calls if c[1] == "training_step"]
    # one warm-up and one timed step per row, each through the module's own training_step
    assert [c[0] for c in steps] == ["GanModule"] * 6 + ["LupiModule"] * 6 + ["RegressionModule"] * 6
    # each setting's overrides reach the module: reference, fast (channels_last), fast + efficient
    assert [c[2:] for c in steps[:6]] == [(False, None)] * 2 + [(True, None)] * 2 + [(True, True)] * 2
    # the shipped recipes clip gradients: the GAN twice per step (D and G), LUPI once
    clips = [c[0] for c in calls if c[1] == "clip_gradients"]
    assert clips.count("GanModule") == 2 * 6 and clips.count("LupiModule") == 6
    table = format_table({"device": "cpu", "torch": torch.__version__, "training": rows})
    assert "pretrain (regression)" in table and "img/s" in table


def test_recipe_module_reads_the_shipped_reference_config():
    module, config = recipe_module(RECIPES[0], batch=3, crop=64)
    assert isinstance(module, GanModule) and config.name == "C2_20x_gan"
    assert (config.data.batch_size, config.data.crop_size) == (3, 64)
    assert config.gan.pool == "history" and config.trainer.gradient_clip == 1.0 and module.real_pool is not None
    assert sum(p.numel() for p in module.discriminator.parameters()) == 1_746_337  # as the config says


def test_fast_settings_depend_on_the_device():
    labels = [s.label for s in training_settings(CPU)]
    assert labels[0] == "reference config (fp32 eager)" and len(labels) == 3
    assert all("compile" not in label for label in labels)  # opt-in on a CPU
    overrides = training_settings(CPU)[2].overrides
    assert "trainer.channels_last=true" in overrides and "model.args.efficient=true" in overrides


def test_run_benchmark_runs_only_the_chosen_sections():
    result = run_benchmark(("evaluation",), sizes=SIZES, tiny=True, log=lambda _: None)
    assert result["sections"] == ["evaluation"] and "training" not in result and "inference" not in result
    with pytest.raises(ValueError, match="unknown benchmark section 'quality'"):
        run_benchmark(("quality",), sizes=SIZES, log=lambda _: None)
