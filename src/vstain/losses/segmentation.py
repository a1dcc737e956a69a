"""Binary segmentation loss on two-class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def binary_mask_index(mask: torch.Tensor) -> torch.Tensor:
    """Foreground index (0 background, 1 foreground) of a mask, shape ``(B, H, W)``, int64.

    `mask` is ``(B, H, W)`` or ``(B, 1, H, W)``, bool, integer or float; any value > 0.5 is
    foreground (so label images and 0/1 float masks both work).
    """
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
        mask = mask[:, 0]
    elif mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    return (mask.detach().float() > 0.5).long()


def binary_one_hot(mask: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot ``(B, 2, H, W)`` encoding of a binary mask (channel 0 background, 1 foreground).

    ``num_classes=2`` is explicit: the reference let :func:`torch.nn.functional.one_hot` infer
    it, which produced one channel (and a crash) for a batch without foreground.
    """
    return F.one_hot(binary_mask_index(mask), num_classes=2).permute(0, 3, 1, 2).to(dtype)


def _check_logits(logits: torch.Tensor, mask: torch.Tensor) -> None:
    if logits.dim() != 4 or logits.shape[1] != 2:
        raise ValueError(f"segmentation logits must be (B, 2, H, W), got {tuple(logits.shape)}")
    spatial = tuple(mask.shape[-2:])
    if (logits.shape[0], *logits.shape[2:]) != (mask.shape[0], *spatial):
        raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} do not match")


class SegmentationBCE(nn.Module):
    """Binary cross-entropy with logits of two-class logits against a one-hot binary mask.

    As in the reference, each of the two channels is an independent sigmoid (not a softmax);
    the mean runs over ``B * 2 * H * W`` values.

    Shapes: ``logits`` ``(B, 2, H, W)`` raw scores; ``mask`` ``(B, H, W)`` or ``(B, 1, H, W)``
    (see :func:`binary_mask_index`); optional ``weight`` ``(B, 1, H, W)`` per-pixel weights,
    broadcast over both channels. Returns a 0-d float32 tensor.
    """

    def forward(
        self, logits: torch.Tensor, mask: torch.Tensor, *, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_logits(logits, mask)
        target = binary_one_hot(mask).to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
        if weight is not None:
            bce = bce * weight.float()
        return bce.mean()
