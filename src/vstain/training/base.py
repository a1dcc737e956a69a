"""What every recipe shares: validation through the real inference tiler, metrics, optimisers,
the learning-rate schedule (with the fine-tune stage), channels_last and bundle export.

Recipes (:mod:`regression`, :mod:`gan`, :mod:`lupi`) subclass :class:`StainingModule` and
implement ``training_step`` and :meth:`StainingModule.network_output`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from vstain.config import TrainConfig
from vstain.errors import ConfigError
from vstain.inference.tiler import Tiler
from vstain.models import build_model
from vstain.training.metrics import BinaryIoU, PixelRelativeMAE
from vstain.vocabulary import TARGET_CHANNELS


def normaliser_affine(normaliser: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` vectors of a normaliser dict (forward = x * scale + offset)."""
    from vstain.plate.normalize import Normalizer

    norm = Normalizer.from_dict(normaliser)
    return np.asarray(norm.scale, dtype=np.float64).reshape(-1), np.asarray(norm.offset, dtype=np.float64).reshape(-1)


def random_states() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch (CPU and CUDA)."""
    import random

    states: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state as plain ints and a tensor, so checkpoints load with weights_only=True.
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _numpy_state() -> tuple:
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return (str(kind), torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def restore_random_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`random_states`."""
    import random

    random.setstate(states["python"])
    kind, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class StainingModule(L.LightningModule):
    """Base LightningModule of the recipes.

    Parameters
    ----------
    config
        The resolved training config as a JSON-able dict (``TrainConfig.model_dump(mode="json")``).
    normalization
        ``{"input": Normalizer dict, "targets": {target: Normalizer dict}}`` as stored in bundles.
    """

    #: Whether the network returns segmentation logits too (LUPI).
    segments = False

    def __init__(self, config: dict[str, Any], normalization: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = TrainConfig.model_validate(config, context={"check_paths": False})
        self.targets = tuple(self.cfg.data.targets)
        self.normalization = normalization
        scales, offsets = zip(*(normaliser_affine(normalization["targets"][t]) for t in self.targets))
        scale = torch.tensor(np.concatenate(scales), dtype=torch.float32)
        offset = torch.tensor(np.concatenate(offsets), dtype=torch.float32)
        self.register_buffer("target_scale", scale, persistent=False)
        self.register_buffer("target_offset", offset, persistent=False)
        self.generator = build_model(self.cfg.model.name, **self.cfg.model.args)
        if self.cfg.model.output_init == "median":
            self.generator.set_output_level(self.target_levels())
        if self.cfg.trainer.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
        self.val_pixel = PixelRelativeMAE(len(self.targets))
        self.val_iou = BinaryIoU() if self.segments else None
        self.tiler = Tiler(self.cfg.validation.mode)
        self.compile_network(self.generator)
        self.validation_panel: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ helpers
    def _target_medians(self) -> list[float]:
        medians = self.normalization.get("target_medians")
        if not isinstance(medians, dict) or any(t not in medians for t in self.targets):
            raise ConfigError("this run's normalisation has no training-target medians (made by an older vstain); "
                              "set loss.median=sample and model.output_init=default to resume it")
        return [float(medians[t]) for t in self.targets]

    def loss_reference(self) -> list[float] | None:
        """Per-target denominators of the MAE/median losses for ``loss.median: dataset`` (else None).

        The training targets' raw median on each target's normalised scale
        (:func:`vstain.losses.dataset_reference`), so the loss is the challenge's pixel metric.
        """
        if self.cfg.loss.median != "dataset":
            return None
        from vstain.losses import dataset_reference

        out = []
        for target, median in zip(self.targets, self._target_medians()):
            norm = self.normalization["targets"][target]
            out.append(dataset_reference(max(median, 1.0), norm["low"][0], norm["high"][0]))
        return out

    def target_levels(self) -> list[float]:
        """Each target's training median on the normalised (0, 1) output scale."""
        levels = []
        for target, median in zip(self.targets, self._target_medians()):
            norm = self.normalization["targets"][target]
            low, high = norm["low"][0], norm["high"][0]
            levels.append(min(max((median - low) / (high - low), 0.0), 1.0))
        return levels

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Put a batch in the memory format the network was set up for."""
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.trainer.channels_last else x

    def compile_network(self, network: nn.Module) -> None:
        """``torch.compile`` ``network`` in place when ``trainer.compile`` is set.

        In place (:meth:`torch.nn.Module.compile`), so every call of the network - the training
        steps, validation, the GAN's discriminator scores - runs the compiled code, and the
        network's ``state_dict`` keys stay its own (no ``_orig_mod.`` prefix in checkpoints or
        bundles, and a checkpoint resumes with compile on or off).
        """
        if self.cfg.trainer.compile:
            network.compile()

    def network_output(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode map ``(B, 7, h, w) -> (B, K [+2 seg logits], h, w)`` used by the tiler."""
        out = self.generator(self.prepare_input(x))
        return out if isinstance(out, torch.Tensor) else out[-1]

    def to_counts(self, normalised: torch.Tensor) -> torch.Tensor:
        """De-normalise ``(K, H, W)`` to raw counts, rounded and clipped to the uint16 range."""
        raw = (normalised.float() - self.target_offset[:, None, None]) / self.target_scale[:, None, None]
        return raw.round_().clamp_(0, 65535)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        image = batch["image"][0]
        with torch.no_grad():
            out = self.tiler(image, self.network_output, batch_size=4)
        k = len(self.targets)
        pred = out[:k].clamp(0, 1)
        counts = self.to_counts(pred)
        self.val_pixel.update(counts, batch["target_raw"][0])
        if self.val_iou is not None and "mask" in batch:
            segmentation = out[k:].argmax(0)
            self.val_iou.update(segmentation, batch["mask"][0] > 0)
        if batch_idx == 0:
            self.validation_panel = {
                "brightfield": image[image.shape[0] // 2].float().cpu().numpy(),
                "truth": batch["target"][0].float().cpu().numpy(),
                "prediction": pred.float().cpu().numpy(),
            }

    def on_validation_epoch_end(self) -> None:
        per_channel = self.val_pixel.compute().reshape(-1)  # torchmetrics squeezes one channel to 0-d
        self.val_pixel.reset()
        for target, value in zip(self.targets, per_channel):
            self.log(f"val/pixel_rel_mae_C{TARGET_CHANNELS[target]:02d}", float(value), sync_dist=False)
        score = float(per_channel.mean())
        self.log("val/pixel_rel_mae", score, prog_bar=True, sync_dist=False)
        if self.val_iou is not None:
            iou = float(self.val_iou.compute())
            self.val_iou.reset()
            self.log("val/iou", iou, prog_bar=True, sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def build_optimizer(self, parameters, lr: float | None = None) -> torch.optim.Optimizer:
        """The configured optimiser over ``parameters``."""
        opt = self.cfg.optimizer
        cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
        return cls(parameters, lr=lr or opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)

    def has_schedule(self) -> bool:
        """Whether the learning rate ever changes (a schedule, a warm-up or a fine-tune stage)."""
        sched = self.cfg.scheduler
        return sched.name != "none" or sched.warmup_epochs > 0 or self.cfg.finetune.epochs > 0

    def configure_optimizers(self):
        optimizer = self.build_optimizer(self.generator.parameters())
        if not self.has_schedule():
            return optimizer
        # A LambdaLR multiplier evaluated every step covers all schedules: cosine warm restarts
        # at fractional epochs (as the reference stepped it), step decay and the fine-tune stage.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def steps_per_epoch(self) -> int:
        trainer = self._trainer
        if trainer is None or not trainer.num_training_batches or math.isinf(trainer.num_training_batches):
            return 1
        return max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier after optimiser step ``step`` (relative to ``optimizer.lr``)."""
        epoch = step / self.steps_per_epoch()
        base = self.cfg.optimizer.lr
        if epoch >= self.cfg.trainer.max_epochs:
            return self.cfg.finetune.lr / base if self.cfg.finetune.epochs else 0.0
        sched = self.cfg.scheduler
        if epoch < sched.warmup_epochs:
            # Linear warm-up: Adam's first steps with a large rate and unsettled moment estimates
            # can throw a freshly initialised network far off.
            return (epoch + 1.0 / self.steps_per_epoch()) / sched.warmup_epochs
        if sched.name == "cosine":
            span = max(self.cfg.trainer.max_epochs - sched.warmup_epochs, 1e-9)
            progress = (epoch - sched.warmup_epochs) / span
            eta_min = sched.eta_min / base
            return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * progress)) / 2
        if sched.name == "cosine_warm_restarts":
            # Cycle i lasts t0 * t_mult**i epochs (SGDR, Loshchilov & Hutter).
            cycle_start, length = 0.0, float(sched.t0)
            while epoch >= cycle_start + length:
                cycle_start += length
                length *= sched.t_mult
            progress = (epoch - cycle_start) / length
            eta_min = sched.eta_min / base
            return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * progress)) / 2
        if sched.name == "step":
            return sched.gamma ** int(epoch // sched.step_size)
        return 1.0

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not save RNG states; dropout and pools draw from them, so an exact
        # resume needs them (data sampling has its own per-sample seeds).
        checkpoint["vstain_rng"] = random_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "vstain_rng" in checkpoint:
            restore_random_states(checkpoint["vstain_rng"])
        # Checkpoints of earlier versions also held every generator weight a second time, under
        # ``_forward.`` (``_forward._orig_mod.`` when compiled); the generator's own keys hold them.
        state = checkpoint.get("state_dict")
        if state is not None:
            for key in [k for k in state if k.startswith("_forward.")]:
                del state[key]

    # ------------------------------------------------------------------ export
    def export_network(self) -> nn.Module:
        """The network a bundle stores (the generator, in eval mode, on the CPU)."""
        return self.generator

    def output_index(self) -> int | None:
        """Which element of a tuple output is the image (bundles record it)."""
        return None
