"""Validation metrics, synchronised across processes (torchmetrics states reduce by sum under DDP).

:class:`PixelRelativeMAE` is the challenge's pixelwise metric: per channel, the mean absolute
error in raw counts over all pixels of all validation fields divided by the median of the
target's pixels (pooled). The pooled median is exact and streamed: uint16 targets are counted in
a 65536-bin histogram.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from vstain.evaluation.metric import histogram_median

_BINS = 65536


class PixelRelativeMAE(Metric):
    """Challenge pixel metric per channel: ``sum|pred - target| / n / median(target)``.

    ``update(pred, target)`` takes raw-count tensors of shape ``(K, H, W)`` or ``(B, K, H, W)``
    (prediction already rounded/clipped to uint16 range, target integer counts). ``compute()``
    returns a ``(K,)`` float64 tensor.
    """

    full_state_update = False

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.add_state("abs_error", torch.zeros(channels, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.zeros(channels, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("histogram", torch.zeros(channels, _BINS, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.ndim == 3:
            pred, target = pred[None], target[None]
        pred = pred.to(torch.float64)
        target_counts = target.to(torch.int64).clamp_(0, _BINS - 1)
        for k in range(self.channels):
            self.abs_error[k] += (pred[:, k] - target_counts[:, k]).abs().sum()
            self.pixels[k] += target_counts[:, k].numel()
            self.histogram[k] += torch.bincount(target_counts[:, k].reshape(-1), minlength=_BINS).to(torch.float64)

    def compute(self) -> torch.Tensor:
        # The same exact histogram median the evaluation's pixel metric uses.
        median = torch.tensor([histogram_median(h) for h in self.histogram.cpu().numpy()],
                              dtype=torch.float64, device=self.abs_error.device)
        # A zero median (e.g. an empty channel) would divide by zero: report the plain MAE then.
        return (self.abs_error / self.pixels.clamp_min(1)) / median.clamp_min(1.0)


class BinaryIoU(Metric):
    """Intersection over union of binary masks, pooled over all validation pixels."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("intersection", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.bool(), target.bool()
        self.intersection += (pred & target).sum()
        self.union += (pred | target).sum()

    def compute(self) -> torch.Tensor:
        return torch.where(self.union > 0, self.intersection / self.union.clamp_min(1), torch.ones_like(self.union))
