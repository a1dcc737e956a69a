"""Recipe ``lupi``: nuclei fluorescence + segmentation with the loss-weight module.

Reference: AdamW 1e-3 (weight decay 1e-3), cosine annealing with warm restarts (T0=2, Tmult=2)
stepped every iteration, gradient clipping 1.0, 20/30/60 epochs at 20x/40x/60x, then the
report's low-learning-rate fine-tune (10 epochs at 1e-5) that the reference code forgot
(``finetune.epochs``). Masks are the privileged information: nucleus labels from ``masks/`` or,
when absent, from vstain's CellProfiler-equivalent nuclei segmentation of C01.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vstain.losses import LupiLoss
from vstain.training.base import StainingModule


class LupiModule(StainingModule):
    """Trains the LUPI network on (nuclei image, nucleus mask) pairs."""

    segments = True

    def __init__(self, config: dict[str, Any], normalization: dict[str, Any]) -> None:
        super().__init__(config, normalization)
        weights = self.cfg.loss
        self.loss = LupiLoss(lwm_weight=weights.lwm, bce_weight=weights.bce, mae_weight=weights.median_mae,
                             median=weights.median, reference=self.loss_reference(),
                             squared=weights.squared)

    def network_output(self, x: torch.Tensor) -> torch.Tensor:
        # The tiler blends the image and the segmentation logits together: (B, 1 + 2, h, w).
        seg_logits, image = self.generator(self.prepare_input(x))[:2]
        return torch.cat([image, seg_logits], dim=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "mask" not in batch:
            raise RuntimeError("the lupi recipe needs nucleus masks in every batch")
        target, mask = batch["target"], batch["mask"]
        downsample = getattr(self.generator, "downsample", 1)
        if self.cfg.loss.scale == "working" and downsample > 1:
            # The image output is a bilinear upsampling of the working-scale one, so comparing
            # the working scale with block means asks for the same picture at d² fewer pixels.
            seg_logits, image, sides = self.generator(self.prepare_input(batch["image"]), full_size=False)
            target = F.avg_pool2d(target, downsample)
            mask = (F.avg_pool2d(mask.float(), downsample) >= 0.5).to(mask.dtype)
        else:
            seg_logits, image, sides = self.generator(self.prepare_input(batch["image"]))
        total, components = self.loss(seg_logits, image.clamp(0, 1), sides, target, mask)
        size = batch["image"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in components.items() if k != "total"},
                      on_step=True, on_epoch=True, batch_size=size)
        self.log("train/loss", total.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        return total

    def output_index(self) -> int | None:
        return 1
