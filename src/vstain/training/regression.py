"""Recipe ``regression``: generator pretraining (reference: log-squared loss, Adam 1e-4, 200 epochs)."""

from __future__ import annotations

from typing import Any

import torch

from vstain.losses import build_loss
from vstain.training.base import StainingModule


class RegressionModule(StainingModule):
    """Trains the generator alone on a pixel loss (``loss.regression``, default log-squared).

    The output is clamped to [0, 1] before the loss, as the reference did.
    """

    def __init__(self, config: dict[str, Any], normalization: dict[str, Any]) -> None:
        super().__init__(config, normalization)
        loss_cfg = self.cfg.loss
        options: dict[str, Any] = {}
        if loss_cfg.regression == "log_squared":
            options["eps"] = loss_cfg.log_eps
        elif loss_cfg.regression == "median_mae":
            options["median"] = loss_cfg.median
            options["reference"] = self.loss_reference()
            options["squared"] = loss_cfg.squared
        self.loss = build_loss(loss_cfg.regression, **options)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        prediction = self.generator(self.prepare_input(batch["image"]))
        loss = self.loss(prediction.clamp(0, 1), batch["target"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["image"].shape[0])
        return loss
