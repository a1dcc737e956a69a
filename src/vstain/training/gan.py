"""Recipe ``gan``: conditional relativistic-average LSGAN (lipids, cytoplasm).

Per batch, as the reference: one discriminator step, then one generator step.

* D step: ``fake = G(x)`` without gradient; D scores ``[x, y]`` and ``[x, fake]``; with the
  ``history`` pool (reference) both score maps are pushed into FIFO pools of past D outputs and
  the relativistic references are the pool means; with the ``image`` pool, fakes are drawn from a
  random-replacement pool of past generated images and the references are batch means.
* G step: ``L = adversarial * L_G + gradient * GradientLoss + median_mae * MedianMAE``.

Both networks clip their gradient norm (``trainer.gradient_clip``, reference 1.0). The pools, both
optimisers and their schedules are saved in every checkpoint, so a run resumes exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from vstain.errors import ConfigError
from vstain.losses import (
    GradientLoss,
    ImagePool,
    MedianMAE,
    OutputHistoryPool,
    RaLSGANDiscriminatorLoss,
    RaLSGANGeneratorLoss,
)
from vstain.models import build_model
from vstain.training.base import StainingModule


class GanModule(StainingModule):
    """Generator + conditional PatchGAN discriminator trained with manual optimisation."""

    def __init__(self, config: dict[str, Any], normalization: dict[str, Any]) -> None:
        super().__init__(config, normalization)
        self.automatic_optimization = False
        gan = self.cfg.gan
        if gan is None:  # TrainConfig refuses this for recipe "gan"; a config built by hand may not
            raise ConfigError("gan: the gan recipe needs a gan section (at least gan.pretrained)")
        planes = int(self.cfg.model.args.get("in_channels", 7))
        d_args = {"in_channels": planes + len(self.targets), **gan.discriminator.args}
        self.discriminator = build_model(gan.discriminator.name, **d_args)
        if self.cfg.trainer.channels_last:
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        self.compile_network(self.discriminator)
        self.d_loss = RaLSGANDiscriminatorLoss()
        self.g_loss = RaLSGANGeneratorLoss()
        self.gradient_loss = GradientLoss()
        self.median_mae = MedianMAE(median=self.cfg.loss.median, reference=self.loss_reference(),
                                    squared=self.cfg.loss.squared)
        if gan.pool == "history":
            self.real_pool: OutputHistoryPool | None = OutputHistoryPool(gan.pool_size)
            self.fake_pool: OutputHistoryPool | None = OutputHistoryPool(gan.pool_size)
            self.image_pool: ImagePool | None = None
        else:
            self.real_pool = self.fake_pool = None
            self.image_pool = ImagePool(gan.pool_size, seed=self.cfg.seed)

    def load_pretrained(self, path: str) -> None:
        """Start the generator from a pretrain run's bundle (weights only)."""
        from vstain.inference.bundle import load_model

        bundle = load_model(path)
        self.generator.load_state_dict(bundle.model.state_dict())

    def _score(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.prepare_input(torch.cat([condition, image], dim=1)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["image"], batch["target"]
        x = self.prepare_input(x)
        opt_g, opt_d = self.optimizers()
        clip = self.cfg.trainer.gradient_clip
        batch_size = x.shape[0]

        # --- discriminator step
        with torch.no_grad():
            fake = self.generator(x)
        if self.image_pool is not None:
            fake = self.image_pool.query(fake)
        d_real = self._score(x, y)
        d_fake = self._score(x, fake)
        if self.real_pool is not None and self.fake_pool is not None:
            self.real_pool.push(d_real)
            self.fake_pool.push(d_fake)
            loss_d = self.d_loss(
                d_real, d_fake, real_reference=self.real_pool.mean(), fake_reference=self.fake_pool.mean()
            )
        else:
            loss_d = self.d_loss(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        if clip:
            self.clip_gradients(opt_d, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_d.step()

        # --- generator step
        prediction = self.generator(x)
        d_real = self._score(x, y)
        d_fake = self._score(x, prediction)
        if self.real_pool is not None and self.fake_pool is not None:
            adversarial = self.g_loss(
                d_real, d_fake, real_reference=self.real_pool.mean(), fake_reference=self.fake_pool.mean()
            )
        else:
            adversarial = self.g_loss(d_real, d_fake)
        weights = self.cfg.loss
        gradient = self.gradient_loss(prediction, y)
        median_mae = self.median_mae(prediction, y)
        loss_g = weights.adversarial * adversarial + weights.gradient * gradient + weights.median_mae * median_mae
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        if clip:
            self.clip_gradients(opt_g, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_g.step()
        # The discriminator's gradients from the G step are stale; clear them now.
        opt_d.zero_grad(set_to_none=True)

        for scheduler in self._schedulers():
            scheduler.step()
        self.log_dict(
            {"train/loss_d": loss_d.detach(), "train/loss_g": loss_g.detach(),
             "train/adversarial": adversarial.detach(), "train/gradient": gradient.detach(),
             "train/median_mae": median_mae.detach()},
            prog_bar=False, on_step=True, on_epoch=True, batch_size=batch_size,
        )
        self.log("train/loss", loss_g.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    def configure_optimizers(self):
        opt_g = self.build_optimizer(self.generator.parameters())
        assert self.cfg.gan is not None
        opt_d = self.build_optimizer(self.discriminator.parameters(), lr=self.cfg.gan.d_lr)
        if not self.has_schedule():
            return [opt_g, opt_d]
        # Same multiplier for both (the reference decayed both with one StepLR setting).
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda=self.lr_factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        pools = {}
        for name in ("real_pool", "fake_pool", "image_pool"):
            pool = getattr(self, name)
            if pool is not None:
                pools[name] = pool.state_dict()
        checkpoint["vstain_pools"] = pools

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        for name, state in checkpoint.get("vstain_pools", {}).items():
            pool = getattr(self, name, None)
            if pool is not None:
                pool.load_state_dict(state)
