"""``trainer.compile: true`` compiles the networks the training steps run, and keeps checkpoints clean.

``torch.compile`` is replaced by a recorder (no real compilation: the one slow real-compile test
is tests/models/test_models_compile.py), so these tests see which callables were compiled and
which compiled callables the training step called.
"""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from vstain.config import TrainConfig
from vstain.inference.bundle import save_bundle
from vstain.training.fit import recipe_class

TINY = {"init_filters": 8, "down_blocks": [1, 1], "up_blocks": [1, 1], "bottleneck_layers": 1, "growth_rate": 4,
        "dropout": 0.0}
pytestmark = pytest.mark.filterwarnings("ignore:.*val_dataloader.*")
NETWORKS = {"regression": ["generator"], "lupi": ["generator"], "gan": ["generator", "discriminator"]}


def _config(recipe: str, *, compile: bool) -> TrainConfig:
    targets = ["nuclei"] if recipe == "lupi" else ["lipids"]
    data = {"name": f"compile_{recipe}", "recipe": recipe, "seed": 3,
            "data": {"root": "unused", "targets": targets, "crop_size": 32, "batch_size": 2},
            "model": {"name": "lupi" if recipe == "lupi" else "tiramisu", "args": dict(TINY)},
            "trainer": {"compile": compile, "gradient_clip": 1.0, "progress_bar": False}}
    if recipe == "gan":
        data["gan"] = {"discriminator": {"name": "patchgan", "args": {"ndf": 8, "n_layers": 2}}}
    return TrainConfig.model_validate(data, context={"check_paths": False})


def _normalization(targets) -> dict:
    unit = {"kind": "minmax", "low": [0.0], "high": [1.0]}
    return {"input": {"kind": "minmax", "low": [0.0] * 7, "high": [1.0] * 7,
                      "channels": [f"C04Z0{z}" for z in range(1, 8)]},
            "targets": {t: {**unit, "channels": [t]} for t in targets},
            "target_medians": {t: 0.5 for t in targets}}


def _module(recipe: str, *, compile: bool):
    config = _config(recipe, compile=compile)
    return recipe_class(recipe)(config.model_dump(mode="json"), _normalization(config.data.targets))


def _loader(recipe: str) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        image = torch.rand(7, 32, 32, generator=generator)
        sample = {"image": image, "target": image[:1].clone()}
        if recipe == "lupi":
            sample["mask"] = (image[0] > 0.5).float()
        samples.append(sample)
    return torch.utils.data.DataLoader(samples, batch_size=2)


class CompileRecorder:
    """Stands in for ``torch.compile``: remembers what was compiled and when the result was called."""

    def __init__(self) -> None:
        self.compiled: list[object] = []
        self.calls: list[tuple[object, bool]] = []
        self.in_training_step = False

    def __call__(self, fn, *args, **kwargs):
        owner = getattr(fn, "__self__", fn)  # Module.compile() hands over the module's bound _call_impl
        self.compiled.append(owner)

        @functools.wraps(fn)
        def compiled(*a, **k):
            self.calls.append((owner, self.in_training_step))
            return fn(*a, **k)

        return compiled

    def watch_training_step(self, monkeypatch, cls) -> None:
        original = cls.training_step

        def training_step(module, *args, **kwargs):
            self.in_training_step = True
            try:
                return original(module, *args, **kwargs)
            finally:
                self.in_training_step = False

        monkeypatch.setattr(cls, "training_step", training_step)


def _fit_one_step(module, recipe: str, **trainer_options) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", **trainer_options)
    trainer.fit(module, train_dataloaders=_loader(recipe))
    return trainer


@pytest.mark.parametrize("recipe", ["regression", "lupi", "gan"])
def test_training_step_runs_the_compiled_networks(monkeypatch, recipe):
    recorder = CompileRecorder()
    monkeypatch.setattr(torch, "compile", recorder)
    cls = recipe_class(recipe)
    recorder.watch_training_step(monkeypatch, cls)
    module = _module(recipe, compile=True)
    networks = [getattr(module, name) for name in NETWORKS[recipe]]
    assert recorder.compiled == networks  # exactly the networks the step trains, each once
    _fit_one_step(module, recipe)
    called = {id(owner) for owner, inside in recorder.calls if inside}
    assert called == {id(network) for network in networks}, "training_step did not call every compiled network"
    assert all(inside for _, inside in recorder.calls)  # validation is off: nothing else ran them


@pytest.mark.parametrize("recipe", ["regression", "gan"])
def test_without_compile_nothing_is_compiled(monkeypatch, recipe):
    recorder = CompileRecorder()
    monkeypatch.setattr(torch, "compile", recorder)
    _fit_one_step(_module(recipe, compile=False), recipe)
    assert recorder.compiled == [] and recorder.calls == []


def test_compiled_checkpoints_and_bundles_keep_plain_keys_and_resume_either_way(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "compile", CompileRecorder())
    compiled, plain = _module("gan", compile=True), _module("gan", compile=False)
    keys = set(compiled.state_dict())
    assert keys == set(plain.state_dict())
    assert not any("_orig_mod" in key or "_forward" in key for key in keys)
    trainer = _fit_one_step(compiled, "gan")
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    plain.load_state_dict(state, strict=True)  # a compiled run resumes without compile ...
    for name, value in compiled.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[name], value)
    again = _module("gan", compile=True)
    again.load_state_dict(state, strict=True)  # ... and with it
    bundle = save_bundle(tmp_path / "lipids", compiled.export_network(), {
        "architecture": {"name": "tiramisu", "arguments": TINY}, "targets": ["lipids"], "magnification": "20x",
        "normalization": _normalization(["lipids"]), "training": {"recipe": "gan"}, "validation": {}})
    from safetensors.torch import load_file

    assert set(load_file(str(bundle))) == set(plain.generator.state_dict())


def test_checkpoints_of_earlier_versions_still_resume(monkeypatch):
    """They duplicated the generator under ``_forward.`` (``_forward._orig_mod.`` when compiled)."""
    monkeypatch.setattr(torch, "compile", CompileRecorder())
    saved = _module("regression", compile=False)
    state = dict(saved.state_dict())
    generator = saved.generator.state_dict()
    state.update({f"_forward.{k}": v for k, v in generator.items()})
    state.update({f"_forward._orig_mod.{k}": v for k, v in generator.items()})
    checkpoint = {"state_dict": state}
    module = _module("regression", compile=True)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    for name, value in generator.items():
        torch.testing.assert_close(module.generator.state_dict()[name], value)
