"""Loss-weight-module (LWM) loss and the complete nuclei (LUPI) objective.

Shapes throughout: ``image`` (the regression output) and ``target`` ``(B, 1, H, W)`` in
[0, 1]; ``seg_logits`` ``(B, 2, H, W)`` raw two-class scores; ``mask`` ``(B, H, W)`` or
``(B, 1, H, W)`` binary nucleus mask; ``side_outputs`` a sequence of raw ``(B, 1, h_k, w_k)``
maps from the regression decoder (1/8, 1/4 and 1/2 resolution in the reference), which are
passed through the scaled tanh ``(tanh(z) + 1) / 2`` here, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vstain.losses.intensity import (
    DEFAULT_EPS,
    MedianMAE,
    MedianScope,
    check_median_scope,
    check_squared,
    reference_tensor,
    relative_error,
    target_median,
)
from vstain.losses.segmentation import SegmentationBCE, binary_mask_index

ResizeMode = Literal["area", "bilinear", "nearest"]
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "nearest")


def resize_map(image: torch.Tensor, size: tuple[int, int], *, mode: ResizeMode = "area") -> torch.Tensor:
    """Resize a ``(B, C, H, W)`` map to `size` ``(h, w)`` for comparison with a side output.

    ``"area"`` averages the pixels each output pixel covers (the exact block mean for the
    integer factors of the decoder); ``"bilinear"`` is antialiased bilinear
    (``align_corners=False``); ``"nearest"`` is the reference (PyTorch's default nearest, which
    keeps the top-left pixel of each block and ignores the rest).
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if mode == "area":
        return F.interpolate(image, size=size, mode="area")
    if mode == "bilinear":
        return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    if mode == "nearest":
        return F.interpolate(image, size=size, mode="nearest")
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")


def misclassification_weight(
    seg_logits: torch.Tensor, mask: torch.Tensor, *, pixel_weight: float = 2.0
) -> torch.Tensor:
    """Per-pixel weight ``(B, 1, H, W)``: 1 where ``argmax(seg_logits) == mask``, else `pixel_weight`.

    Recomputed from the current prediction and carries no gradient. A tie between the two
    logits counts as background (``argmax`` returns the first index).
    """
    predicted = seg_logits.detach().argmax(dim=1)
    correct = predicted == binary_mask_index(mask).to(predicted.device)
    ones = torch.ones_like(correct, dtype=torch.float32)
    return torch.where(correct, ones, ones * pixel_weight).unsqueeze(1)


def scaled_tanh(z: torch.Tensor) -> torch.Tensor:
    """``(tanh(z) + 1) / 2``: raw scores to [0, 1], the networks' output activation."""
    return (torch.tanh(z) + 1.0) / 2.0


class LossWeightModuleLoss(nn.Module):
    """Loss-weight-module loss (reference ``LWMIntLayersMedianMAELoss``, report eq. 7-8).

    With ``w`` from :func:`misclassification_weight` and ``med(.)`` the clamped target median
    (:func:`~vstain.losses.intensity.target_median`)::

        weighted_bce = mean(w * BCEWithLogits(seg_logits, one_hot(mask)))      # over B*2*H*W
        weighted_mae = mean(w * |image - target| / med(target))
        side         = sum_k mean(w_k * |scaled_tanh(z_k) - y_k| / med(y_k))
        total        = mae_weight * weighted_mae + bce_weight * weighted_bce + side_weight * side

    where ``y_k`` and ``w_k`` are the target and the weight resized to side output ``z_k``.

    Parameters
    ----------
    pixel_weight : float
        Weight of misclassified pixels (2 in the reference).
    mae_weight, bce_weight, side_weight : float
        Reference 0.5, 1.0 and 0.1.
    median : {"sample", "batch", "dataset"}
        Median scope; the reference used ``"batch"`` (see
        :class:`~vstain.losses.intensity.MedianMAE`).
    eps : float
        Floor of the median.
    reference : sequence of float, optional
        Per-channel denominators for ``median="dataset"``.
    squared : float
        Weight of the squared term of every MAE/median (:func:`~vstain.losses.intensity.relative_error`).
    resize : {"area", "bilinear", "nearest"}
        How targets and weights are brought to the side outputs' size; the reference used
        ``"nearest"``, which keeps only the top-left pixel of each 2x2 (4x4, 8x8) block.

    ``forward(image, target, seg_logits, mask, side_outputs)`` returns the 0-d float32 total;
    :meth:`terms` returns the three unweighted terms.
    """

    def __init__(
        self,
        *,
        pixel_weight: float = 2.0,
        mae_weight: float = 0.5,
        bce_weight: float = 1.0,
        side_weight: float = 0.1,
        median: MedianScope = "sample",
        eps: float = DEFAULT_EPS,
        resize: ResizeMode = "area",
        reference: Sequence[float] | None = None,
        squared: float = 0.0,
    ) -> None:
        super().__init__()
        median = check_median_scope(median, reference)
        self.squared = check_squared(squared)
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.pixel_weight = float(pixel_weight)
        self.mae_weight = float(mae_weight)
        self.bce_weight = float(bce_weight)
        self.side_weight = float(side_weight)
        self.median = median
        self.eps = float(eps)
        self.resize = resize
        self.bce = SegmentationBCE()
        self.register_buffer("reference", reference_tensor(reference), persistent=False)

    def _median_mae(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        med = target_median(y, scope=self.median, eps=self.eps, reference=self.reference)
        return (w * relative_error(x - y, med, squared=self.squared)).mean()

    def terms(
        self,
        image: torch.Tensor,
        target: torch.Tensor,
        seg_logits: torch.Tensor,
        mask: torch.Tensor,
        side_outputs: Sequence[torch.Tensor] = (),
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms ``{"weighted_mae", "weighted_bce", "side"}`` (0-d float32 tensors)."""
        if image.shape != target.shape:
            raise ValueError(f"image shape {tuple(image.shape)} != target shape {tuple(target.shape)}")
        image, target = image.float(), target.float()
        w = misclassification_weight(seg_logits, mask, pixel_weight=self.pixel_weight)
        side = image.new_zeros(())
        for z in side_outputs or ():
            size = (int(z.shape[-2]), int(z.shape[-1]))
            y_k = resize_map(target, size, mode=self.resize)
            w_k = resize_map(w, size, mode=self.resize)
            side = side + self._median_mae(scaled_tanh(z.float()), y_k, w_k)
        return {
            "weighted_mae": self._median_mae(image, target, w),
            "weighted_bce": self.bce(seg_logits, mask, weight=w),
            "side": side,
        }

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of :meth:`terms`."""
        return (
            self.mae_weight * terms["weighted_mae"]
            + self.bce_weight * terms["weighted_bce"]
            + self.side_weight * terms["side"]
        )

    def forward(
        self,
        image: torch.Tensor,
        target: torch.Tensor,
        seg_logits: torch.Tensor,
        mask: torch.Tensor,
        side_outputs: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        return self.combine(self.terms(image, target, seg_logits, mask, side_outputs))

    def extra_repr(self) -> str:
        return (
            f"pixel_weight={self.pixel_weight:g}, mae_weight={self.mae_weight:g}, "
            f"bce_weight={self.bce_weight:g}, side_weight={self.side_weight:g}, "
            f"median={self.median!r}, eps={self.eps:g}, resize={self.resize!r}"
        )


class LupiLoss(nn.Module):
    """The complete nuclei objective as trained by the reference (``CustomLUPILWMTrainer``)::

        total = lwm_weight * LWM + bce_weight * BCE(seg_logits, mask) + mae_weight * MedianMAE

    with reference weights 1.0, 1.0 and 0.5 (the report's eq. 6 puts alpha_medMAE on the BCE
    terms too; the code, reproduced here, uses 1.0).

    Parameters
    ----------
    lwm_weight, bce_weight, mae_weight : float
        Weights of the three parts.
    pixel_weight, lwm_mae_weight, lwm_bce_weight, lwm_side_weight, resize
        Passed to :class:`LossWeightModuleLoss` (as its ``pixel_weight``, ``mae_weight``,
        ``bce_weight``, ``side_weight``, ``resize``).
    median, eps, reference, squared
        Median scope, floor, (for ``"dataset"``) per-channel denominators and the weight of the
        squared term, shared by the LWM and the plain MedianMAE term.

    ``forward(seg_logits, image, side_outputs, target, mask)`` (the network's outputs first, in
    the order the LUPI network returns them) returns ``(total, components)``: ``total`` a 0-d
    float32 tensor with gradient, ``components`` a dict of detached 0-d tensors for logging:
    ``total``, ``lwm``, ``lwm_weighted_mae``, ``lwm_weighted_bce``, ``lwm_side``, ``bce``,
    ``median_mae``. ``side_outputs`` may be empty (eval mode): the side term is then 0.
    """

    def __init__(
        self,
        *,
        lwm_weight: float = 1.0,
        bce_weight: float = 1.0,
        mae_weight: float = 0.5,
        pixel_weight: float = 2.0,
        lwm_mae_weight: float = 0.5,
        lwm_bce_weight: float = 1.0,
        lwm_side_weight: float = 0.1,
        median: MedianScope = "sample",
        eps: float = DEFAULT_EPS,
        resize: ResizeMode = "area",
        reference: Sequence[float] | None = None,
        squared: float = 0.0,
    ) -> None:
        super().__init__()
        self.lwm_weight = float(lwm_weight)
        self.bce_weight = float(bce_weight)
        self.mae_weight = float(mae_weight)
        self.lwm = LossWeightModuleLoss(
            pixel_weight=pixel_weight,
            mae_weight=lwm_mae_weight,
            bce_weight=lwm_bce_weight,
            side_weight=lwm_side_weight,
            median=median,
            eps=eps,
            resize=resize,
            reference=reference,
            squared=squared,
        )
        self.bce = SegmentationBCE()
        self.median_mae = MedianMAE(median=median, eps=eps, reference=reference, squared=squared)

    def forward(
        self,
        seg_logits: torch.Tensor,
        image: torch.Tensor,
        side_outputs: Sequence[torch.Tensor] | None,
        target: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lwm_terms = self.lwm.terms(image, target, seg_logits, mask, side_outputs or ())
        lwm = self.lwm.combine(lwm_terms)
        bce = self.bce(seg_logits, mask)
        median_mae = self.median_mae(image, target)
        total = self.lwm_weight * lwm + self.bce_weight * bce + self.mae_weight * median_mae
        components = {
            "total": total,
            "lwm": lwm,
            "lwm_weighted_mae": lwm_terms["weighted_mae"],
            "lwm_weighted_bce": lwm_terms["weighted_bce"],
            "lwm_side": lwm_terms["side"],
            "bce": bce,
            "median_mae": median_mae,
        }
        return total, {name: value.detach() for name, value in components.items()}

    def extra_repr(self) -> str:
        return f"lwm_weight={self.lwm_weight:g}, bce_weight={self.bce_weight:g}, mae_weight={self.mae_weight:g}"
