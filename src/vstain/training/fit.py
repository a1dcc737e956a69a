"""``fit()``: run one training config end to end — data, recipe, Lightning trainer, checkpoints,
logs, resume — and export the best validated generator as a model bundle.

Run folder layout (``runs/<name>`` by default)::

    config.resolved.yaml   the validated config with every default filled in
    environment.json       package versions, git commit, command line
    stats.json, split.csv  normalisation statistics and the train/validation split used
    checkpoints/           last.ckpt (every epoch and every N steps), best.ckpt (on validation)
    logs/                  CSV metrics, TensorBoard scalars, validation panels (PNG)
    model.safetensors      the bundle `vstain predict` uses (best validation checkpoint)

Resuming reads the checkpoint weights-only (tensors and plain values; a checkpoint that carries
pickled Python objects is refused, never executed), checks that it was written for this
config's network, and keeps ``logs/metrics.csv`` up to the checkpoint. A run that fails before
its first checkpoint removes the run folder if it created it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from vstain.atomic import write_text_atomic
from vstain.config import TrainConfig, config_to_yaml
from vstain.errors import ConfigError, VstainError

RECIPES = {
    "regression": "vstain.training.regression:RegressionModule",
    "gan": "vstain.training.gan:GanModule",
    "lupi": "vstain.training.lupi:LupiModule",
}


def recipe_class(recipe: str) -> type:
    """The LightningModule class of a recipe name."""
    import importlib

    module_name, class_name = RECIPES[recipe].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def environment_summary() -> dict[str, Any]:
    """Versions and provenance saved next to every trained model."""
    import lightning
    import numpy
    import torch

    from vstain import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "vstain": __version__,
        "git_commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        # The same seed trains a different model where torch picks other CPU kernels (AVX2 against
        # AVX-512: other summation orders, a different trajectory; docs/quality.md), so say which.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "command": sys.argv,
    }


def _monitor(config: TrainConfig) -> str:
    if config.validation.monitor != "auto":
        return config.validation.monitor
    return "val/pixel_rel_mae"


def fit(
    config: TrainConfig, out_dir: str | os.PathLike[str], *, resume: str | os.PathLike[str] | bool | None = None
) -> Path:
    """Train ``config`` into ``out_dir`` and return the path of the exported bundle.

    Parameters
    ----------
    config
        A validated training config.
    out_dir
        Run folder (created).
    resume
        ``True`` to continue from ``out_dir/checkpoints/last.ckpt``, a checkpoint path, or None.
    """
    _quiet_lightning_tips()
    out = Path(out_dir)
    checkpoints = out / "checkpoints"
    ckpt_path = _resume_path(resume, checkpoints)
    # What resuming needs of the checkpoint, read (weights-only) before anything is created.
    resumed = _ResumePoint.read(ckpt_path) if ckpt_path else None
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _fit(config, out, checkpoints, ckpt_path, resumed)
    except BaseException:
        # A run that failed before saving anything resumable leaves nothing behind.
        if created and out.is_dir() and not any(checkpoints.glob("*.ckpt")):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _fit(config: TrainConfig, out: Path, checkpoints: Path, ckpt_path: str | None,
         resumed: "_ResumePoint | None") -> Path:
    import lightning as L
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from vstain.data.datamodule import PlateDataModule
    from vstain.training.callbacks import BundleExport, EpochSummary, ValidationPanels
    from vstain.training.csv_history import ResumableCSVLogger
    from vstain.training.run_summary import RunSummary

    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = PlateDataModule(config, out)
    datamodule.prepare()
    write_text_atomic(out / "config.resolved.yaml", config_to_yaml(config))
    write_text_atomic(out / "environment.json", json.dumps(environment_summary(), indent=2))

    cls = recipe_class(config.recipe)
    module = cls(config.model_dump(mode="json"), datamodule.normalization)
    if resumed is not None:
        resumed.check_fits(module, config)
    if config.recipe == "gan" and ckpt_path is None:
        assert config.gan is not None
        if config.gan.pretrained is None:
            warnings.warn("gan recipe without gan.pretrained: the generator starts from scratch", stacklevel=2)
        else:
            module.load_pretrained(str(config.gan.pretrained))

    trainer_cfg = config.trainer
    monitor = _monitor(config)
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="epoch{epoch:04d}", auto_insert_metric_name=False,
                        save_last=True, save_top_k=-1 if trainer_cfg.checkpoint_every_n_epochs > 1 else 1,
                        every_n_epochs=trainer_cfg.checkpoint_every_n_epochs),
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=monitor, mode="min", save_top_k=1,
                        auto_insert_metric_name=False, enable_version_counter=False),
        ValidationPanels(out / "logs" / "panels"),
    ]
    summary = RunSummary(datamodule, out, monitor=monitor, linear_baseline=config.validation.linear_baseline,
                         seed=config.seed)
    # The summary first, so the bundle records its verdict.
    callbacks += [summary, BundleExport(out / "model.safetensors", datamodule, monitor=monitor, summary=summary)]
    if not trainer_cfg.progress_bar:
        callbacks.append(EpochSummary(config.name))
    if trainer_cfg.ema_decay is not None:
        # Lightning's callback swaps the average in for validation and writes it as the checkpoints'
        # state_dict (the raw weights ride along for resuming), so "best" and the bundle are the average.
        callbacks.append(EMAWeightAveraging(decay=trainer_cfg.ema_decay))
    if trainer_cfg.precise_bn_batches is not None:
        from vstain.training.precise_bn import PreciseBatchNorm

        # Runs at validation start, before the checkpoints are written at its end: "best" and the bundle
        # carry the recomputed statistics (first in the list only so it reads first; order is not needed).
        callbacks.insert(0, PreciseBatchNorm(trainer_cfg.precise_bn_batches))
    if trainer_cfg.checkpoint_every_n_steps:
        callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="step", save_last=True,
                                         every_n_train_steps=trainer_cfg.checkpoint_every_n_steps,
                                         enable_version_counter=False))
    loggers = [ResumableCSVLogger(out, name="logs", version="",
                                  keep_before_step=resumed.step if resumed is not None else None)]
    try:
        loggers.append(TensorBoardLogger(out, name="logs", version="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError:  # pragma: no cover - tensorboardX is a dependency
        pass

    automatic = module.automatic_optimization
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=trainer_cfg.max_epochs + config.finetune.epochs,
        max_steps=trainer_cfg.max_steps,
        precision=trainer_cfg.precision,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        num_nodes=trainer_cfg.num_nodes,
        strategy=trainer_cfg.strategy,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches if automatic else 1,
        gradient_clip_val=trainer_cfg.gradient_clip if automatic else None,
        deterministic=trainer_cfg.deterministic,
        check_val_every_n_epoch=trainer_cfg.val_every_n_epochs,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        enable_progress_bar=trainer_cfg.progress_bar,
        enable_model_summary=False,
        callbacks=callbacks,
        logger=loggers,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our samplers shard by rank themselves
    )
    with warnings.catch_warnings():
        # Lightning's advice on num_workers/log intervals is noise on tiny CPU runs.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch/lightning version skew
        # weights_only: Lightning's own load of the checkpoint never unpickles objects either.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    bundle = out / "model.safetensors"
    if not bundle.exists():
        raise VstainError(f"{out}: training ended without a validated model to export")
    return bundle


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def _quiet_lightning_tips() -> None:
    # Lightning advertises cloud services on every run; keep the console for the user's run.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())


def _resume_path(resume: str | os.PathLike[str] | bool | None, checkpoints: Path) -> str | None:
    if resume is None or resume is False:
        return None
    if resume is True:
        last = checkpoints / "last.ckpt"
        if not last.exists():
            raise ConfigError(f"--resume: {last} does not exist (nothing to resume in this run folder)")
        return str(last)
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"--resume: {path} does not exist")
    return str(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint weights-only (tensors and plain values), for ``--resume``.

    Raises
    ------
    ConfigError
        One line naming the file: not a PyTorch checkpoint, one that carries pickled Python
        objects (refused; nothing in it runs), or not a Lightning checkpoint.
    """
    import pickle

    import torch

    fix = "resume from checkpoints/last.ckpt of a `vstain train` run"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Only the name of what was refused is shown: torch's own text suggests the unsafe load.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise ConfigError(
                f"--resume: {path}: holds a pickled Python object ({found.group(1)}), which vstain never "
                f"loads (only tensors and plain values); {fix}"
            ) from None
        raise ConfigError(f"--resume: {path}: not a PyTorch checkpoint (unreadable data); {fix}") from None
    except Exception as exc:  # noqa: BLE001 - parsing an arbitrary file fails in arbitrary ways
        kind = "empty file" if isinstance(exc, EOFError) else "truncated or not a checkpoint"
        raise ConfigError(f"--resume: {path}: not a PyTorch checkpoint ({kind}); {fix}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict) \
            or "loops" not in checkpoint:
        raise ConfigError(f"--resume: {path}: a PyTorch file but not a Lightning training checkpoint "
                          f"(no state_dict and loop state); {fix}")
    return checkpoint


class _ResumePoint:
    """What resuming needs of a checkpoint: its weights' shapes, its config, its logging step."""

    def __init__(self, path: str, shapes: dict[str, tuple[int, ...]], written: Any, step: int) -> None:
        self.path, self.shapes, self.written, self.step = path, shapes, written, step

    @classmethod
    def read(cls, path: str) -> "_ResumePoint":
        from vstain.training.csv_history import resume_step

        checkpoint = load_checkpoint(path)
        shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if hasattr(v, "shape")}
        written = (checkpoint.get("hyper_parameters") or {}).get("config")
        return cls(path, shapes, written, resume_step(checkpoint))

    def check_fits(self, module: Any, config: TrainConfig) -> None:
        """Raise :class:`ConfigError` (one line) if the checkpoint is for another network.

        The module's ``on_load_checkpoint`` sees the weights' names first, as in Lightning's
        load, so checkpoints it adapts (e.g. dropping weights older versions stored twice) pass.
        """
        adapted = {"state_dict": dict(self.shapes)}
        module.on_load_checkpoint(adapted)
        _check_shapes(adapted["state_dict"], self.written, module, self.path, config)


def _check_shapes(stored: dict[str, tuple[int, ...]], written: Any, module: Any, path: str,
                  config: TrainConfig) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    resized = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if not (missing or unexpected or resized):
        return
    recipe, name = "?", "?"
    if isinstance(written, dict):
        model = written.get("model") if isinstance(written.get("model"), dict) else {}
        recipe, name = str(written.get("recipe", "?")), str(model.get("name", "?"))
    if (recipe, name) != (config.recipe, config.model.name):
        which = f"written by a {recipe} run of {name}, not this config's {config.recipe} run of {config.model.name}"
    else:
        which = f"written for a {name} of other settings than this config's (model.args)"
    if resized:
        detail = f"{resized[0]} is {stored[resized[0]]} there, {expected[resized[0]]} here"
    elif missing:
        detail = f"it lacks {missing[0]}" + (f" and {len(missing) - 1} more weights" if len(missing) > 1 else "")
    else:
        detail = f"it has {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "") \
            + " that this network does not"
    raise ConfigError(f"--resume: {path}: {which} ({detail}); resume with the config that wrote it")
