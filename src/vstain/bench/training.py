"""Training benchmark: the recipe modules ``vstain train`` runs, timed through their ``training_step``.

Each recipe is built from its shipped 20x reference config - ``gan`` from
``configs/train/C2_20x_gan.yaml``, ``lupi`` from ``configs/train/C1_20x.yaml``, ``regression``
from ``configs/train/C2_20x_pretrain.yaml`` - with the batch and crop of the benchmark sizes and a
setting's config overrides (``trainer.precision``, ``trainer.channels_last``, ``trainer.compile``,
``model.args.efficient``). The recipe's LightningModule (:class:`~vstain.training.gan.GanModule`,
:class:`~vstain.training.lupi.LupiModule`, :class:`~vstain.training.regression.RegressionModule`)
is then driven by a Lightning ``Trainer`` set up as :func:`vstain.training.fit.fit` sets it up
(precision, gradient clipping, determinism) over an in-memory loader of random batches. So a
timed step is exactly a step of ``vstain train``: the GAN's discriminator and generator updates
with the history pool and gradient clipping, the configured losses and weights, the schedulers,
Lightning's precision plugin and logging - without the disk reads, which ``vstain cache`` makes
cheap (docs/performance.md).

One untimed warm-up step (where ``torch.compile`` compiles) precedes ``train_steps`` timed steps,
each from ``on_train_batch_start`` to ``on_train_batch_end`` with the device synchronised. Peak
memory covers the timed steps (:class:`vstain.bench.measure.PeakMemory`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from vstain.bench.measure import PeakMemory, bf16_supported, clean, gib, synchronize
from vstain.bench.sizes import BenchSizes
from vstain.config import TrainConfig

__all__ = ["RECIPES", "Recipe", "TrainingSetting", "bench_training", "recipe_module", "training_settings"]


@dataclass(frozen=True)
class Recipe:
    """One training recipe as benchmarked.

    Attributes
    ----------
    label
        Row label.
    config
        Shipped config (relative to ``configs/``) of the full-size benchmark.
    smoke_config
        Shipped smoke config (relative to ``configs/``) of the ``tiny`` benchmark (tests).
    batch
        Name of the :class:`~vstain.bench.sizes.BenchSizes` field that holds its batch size.
    """

    label: str
    config: str
    smoke_config: str
    batch: str


RECIPES: tuple[Recipe, ...] = (
    Recipe("gan (G + D)", "train/C2_20x_gan.yaml", "smoke/lipids_gan.yaml", "gan_batch"),
    Recipe("nuclei lupi", "train/C1_20x.yaml", "smoke/nuclei.yaml", "lupi_batch"),
    Recipe("pretrain (regression)", "train/C2_20x_pretrain.yaml", "smoke/lipids_pretrain.yaml", "regression_batch"),
)

#: Networks of the ``tiny`` benchmark: the bench's own tests time the machinery, not the networks.
_TINY_OVERRIDES = (
    "model.args={init_filters: 8, down_blocks: [1, 1], up_blocks: [1, 1], bottleneck_layers: 1, growth_rate: 4}",
)
_TINY_DISCRIMINATOR = "gan.discriminator.args={ndf: 8, n_layers: 2}"


@dataclass(frozen=True)
class TrainingSetting:
    """One row of settings: a label and the config overrides (``--set`` syntax) that make it."""

    label: str
    overrides: tuple[str, ...] = ()


def training_settings(device: torch.device, *, cpu_compile: bool = False) -> list[TrainingSetting]:
    """The shipped configs as they are, then the fast settings this device supports.

    Parameters
    ----------
    device
        Where the steps run.
    cpu_compile
        Also compile on a CPU (``torch.compile`` warm-up takes minutes there).

    Returns
    -------
    list of TrainingSetting
        The reference first (fp32, eager, deterministic as shipped), then bf16 (where native) +
        channels_last (+ compile on CUDA or with ``cpu_compile``) without the determinism
        switch, then the same with memory-efficient dense layers.
    """
    fast: list[str] = ["trainer.channels_last=true", "trainer.deterministic=false"]
    parts = []
    if bf16_supported(device):
        fast.insert(0, "trainer.precision=bf16-mixed")
        parts.append("bf16")
    else:
        parts.append("fp32 (no native bf16 here)")
    parts.append("channels_last")
    compile_here = device.type == "cuda" or (cpu_compile and _has_cxx())
    if compile_here:
        fast.append("trainer.compile=true")
        parts.append("compile")
    label = " + ".join(parts)
    return [
        TrainingSetting("reference config (fp32 eager)"),
        TrainingSetting(label, tuple(fast)),
        TrainingSetting(label + " + efficient layers", (*fast, "model.args.efficient=true")),
    ]


def _has_cxx() -> bool:
    return bool(shutil.which("g++") or shutil.which("c++"))  # inductor's CPU backend compiles C++


def shipped_config(relative: str) -> Path:
    """Path of a config shipped with vstain (package data, ``src/vstain/configs/<relative>``).

    Parameters
    ----------
    relative
        E.g. ``"train/C1_20x.yaml"``.

    Returns
    -------
    pathlib.Path
        The file inside the package (see :func:`vstain.config.packaged_configs`).
    """
    from vstain.config import packaged_configs
    from vstain.errors import ConfigNotFound

    packaged = packaged_configs().joinpath(*relative.split("/"))
    if not packaged.is_file():
        raise ConfigNotFound(f"configs/{relative}: no such shipped config")
    return Path(str(packaged))


def recipe_module(
    recipe: Recipe, *, batch: int, crop: int, overrides: tuple[str, ...] = (), tiny: bool = False
) -> tuple[L.LightningModule, TrainConfig]:
    """Build a recipe's LightningModule from its shipped config.

    Parameters
    ----------
    recipe
        Which recipe (one of :data:`RECIPES`).
    batch, crop
        Batch size and crop side set in the config (``data.batch_size``, ``data.crop_size``).
    overrides
        Further ``dotted.key=value`` config overrides (a :class:`TrainingSetting`'s).
    tiny
        Start from the recipe's smoke config with tiny networks (tests of the bench itself).

    Returns
    -------
    (module, config)
        The module (``GanModule``, ``LupiModule`` or ``RegressionModule``) and its validated
        :class:`~vstain.config.TrainConfig`.
    """
    from pydantic import ValidationError

    from vstain.config import apply_overrides, read_config_file, validation_message
    from vstain.errors import ConfigError
    from vstain.training.fit import recipe_class

    path = shipped_config(recipe.smoke_config if tiny else recipe.config)
    raw = read_config_file(path)
    settings = [f"data.batch_size={batch}", f"data.crop_size={crop}"]
    if tiny:
        settings += [*_TINY_OVERRIDES, *([_TINY_DISCRIMINATOR] if raw.get("gan") else [])]
    data = apply_overrides(raw, [*settings, *overrides])
    try:
        # No plate and no pretrained bundle exist here: paths are not checked.
        config = TrainConfig.model_validate(data, context={"check_paths": False})
    except ValidationError as error:
        raise ConfigError(f"{path}: {validation_message(error)}") from None
    module = recipe_class(config.recipe)(config.model_dump(mode="json"), _unit_normalization(config.data.targets))
    return module, config


def _unit_normalization(targets: list[str]) -> dict[str, Any]:
    """Identity normalisers: the step's arithmetic does not depend on the statistics."""
    from vstain.plate.normalize import Normalizer
    from vstain.vocabulary import BRIGHTFIELD_CHANNEL, PLANES, TARGET_CHANNELS

    def unit(channels: list[str]) -> dict[str, Any]:
        n = len(channels)
        return Normalizer([0.0] * n, [1.0] * n, channels=channels, kind="minmax").to_dict()

    planes = [f"C{BRIGHTFIELD_CHANNEL:02d}Z{z:02d}" for z in PLANES]
    return {"input": unit(planes), "targets": {t: unit([f"C{TARGET_CHANNELS[t]:02d}"]) for t in targets},
            "target_medians": {t: 0.5 for t in targets}}


class _RandomBatches(torch.utils.data.Dataset):
    """``length`` samples cycling over ``batch`` fixed random ones (image, target[, mask])."""

    def __init__(self, *, batch: int, crop: int, targets: int, masks: bool, length: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.image = torch.rand(batch, 7, crop, crop, generator=generator)
        self.target = torch.rand(batch, targets, crop, crop, generator=generator)
        self.mask = (torch.rand(batch, crop, crop, generator=generator) > 0.7).float() if masks else None
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = index % self.batch
        sample = {"image": self.image[i], "target": self.target[i]}
        if self.mask is not None:
            sample["mask"] = self.mask[i]
        return sample


class _StepTimer(Callback):
    """Wall and process CPU time of each training step after ``warmup``, and the peak memory over them."""

    def __init__(self, device: torch.device, *, warmup: int = 1) -> None:
        self.device, self.warmup = device, warmup
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.memory = PeakMemory(device)
        self._start = self._cpu_start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        synchronize(self.device)
        if batch_idx == self.warmup:
            self.memory.reset()
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        synchronize(self.device)
        if batch_idx >= self.warmup:
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu_seconds.append(time.process_time() - self._cpu_start)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.seconds:
            self.memory.read()


@contextlib.contextmanager
def _lightning_quiet():
    """Lightning's per-run banners (devices, tips, "stopped") for each of the nine rows are noise."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def time_recipe_steps(
    module: L.LightningModule, config: TrainConfig, *, device: torch.device, steps: int
) -> dict[str, Any]:
    """Run ``1 + steps`` training steps of ``module`` under a Lightning ``Trainer``.

    Parameters
    ----------
    module
        A recipe module from :func:`recipe_module`.
    config
        Its :class:`~vstain.config.TrainConfig` (batch, crop, trainer settings).
    device
        ``cpu`` or ``cuda[:N]``.
    steps
        Timed steps after the warm-up step.

    Returns
    -------
    dict
        ``seconds`` and ``cpu_seconds`` (this process, all threads) of each timed step, and
        ``peak_bytes``, the peak memory over them.
    """
    trainer_cfg = config.trainer
    data = _RandomBatches(batch=config.data.batch_size, crop=config.data.crop_size, targets=len(config.data.targets),
                          masks=config.recipe == "lupi", length=config.data.batch_size * (1 + steps))
    loader = torch.utils.data.DataLoader(data, batch_size=config.data.batch_size, shuffle=False, num_workers=0)
    timer = _StepTimer(device)
    automatic = module.automatic_optimization
    # As fit() sets up the trainer; one epoch of 1 + steps batches (the GAN steps two optimisers
    # per batch, so max_steps would count them twice).
    options = dict(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=trainer_cfg.precision,
        max_epochs=1,
        limit_train_batches=1 + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches if automatic else 1,
        gradient_clip_val=trainer_cfg.gradient_clip if automatic else None,
        deterministic=trainer_cfg.deterministic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        with warnings.catch_warnings(), _lightning_quiet():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            L.Trainer(**options).fit(module, train_dataloaders=loader)
    finally:
        # The trainer switches these process-wide; the next measurement starts from the same state.
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    if len(timer.seconds) != steps:
        raise RuntimeError(f"expected {steps} timed steps, the trainer ran {len(timer.seconds)}")
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds, "peak_bytes": timer.memory.peak_bytes}


def bench_training(
    *,
    device: torch.device,
    sizes: BenchSizes,
    tiny: bool = False,
    cpu_compile: bool = False,
    recipes: tuple[Recipe, ...] = RECIPES,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Images/s and peak memory of each recipe's real training step under each setting.

    Parameters
    ----------
    device
        Where the steps run.
    sizes
        Batch sizes, crop and number of timed steps.
    tiny
        Smoke configs with tiny networks (tests of the bench itself; the numbers mean nothing).
    cpu_compile
        Also compile on a CPU.
    recipes
        Which recipes (default all of :data:`RECIPES`).
    log
        Receives one line per row.

    Returns
    -------
    list of dict
        One row per recipe and setting: ``recipe``, ``module`` (the LightningModule class),
        ``config``, ``settings``, ``overrides``, ``batch``, ``crop``, ``images_per_s``,
        ``seconds_per_step`` (wall), ``cpu_seconds_per_step`` (this process's CPU time, the steadier
        measure on a shared machine), ``speedup_vs_reference`` (images/s), ``peak_memory_gib``,
        ``error``.
    """
    rows: list[dict[str, Any]] = []
    for recipe in recipes:
        baseline = None
        batch = getattr(sizes, recipe.batch)
        for setting in training_settings(device, cpu_compile=cpu_compile):
            clean(device)
            module_name: list[str] = []
            try:
                timing = _measure(recipe, setting, batch=batch, sizes=sizes, device=device, tiny=tiny,
                                  built=module_name)
                step = sum(timing["seconds"]) / len(timing["seconds"])
                cpu_step = sum(timing["cpu_seconds"]) / len(timing["cpu_seconds"])
                throughput, peak, error = batch / step, timing["peak_bytes"], None
            except Exception as exc:  # a setting the device cannot run is reported, not fatal
                step, cpu_step, throughput, peak = float("nan"), float("nan"), float("nan"), None
                error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
            if baseline is None and error is None:
                baseline = throughput
            row = {
                "recipe": recipe.label,
                "module": module_name[0] if module_name else None,
                "config": recipe.smoke_config if tiny else recipe.config,
                "settings": setting.label,
                "overrides": list(setting.overrides),
                "batch": batch,
                "crop": sizes.crop,
                "images_per_s": throughput,
                "seconds_per_step": step,
                "cpu_seconds_per_step": cpu_step,
                "speedup_vs_reference": throughput / baseline if baseline and throughput == throughput else None,
                "peak_memory_gib": gib(peak),
                "error": error,
            }
            rows.append(row)
            log(f"  training  {recipe.label:<22} {setting.label:<48} {throughput:8.2f} img/s  "
                f"{cpu_step:7.1f} CPU s/step  peak {row['peak_memory_gib']} GiB" + (f"  [{error}]" if error else ""))
    return rows


def _measure(recipe: Recipe, setting: TrainingSetting, *, batch: int, sizes: BenchSizes, device: torch.device,
             tiny: bool, built: list[str]) -> dict[str, Any]:
    # In its own frame, so the module and its optimiser states are freed before the next setting.
    module, config = recipe_module(recipe, batch=batch, crop=sizes.crop, overrides=setting.overrides, tiny=tiny)
    built.append(type(module).__name__)
    return time_recipe_steps(module, config, device=device, steps=sizes.train_steps)
