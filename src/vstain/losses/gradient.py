"""Gradient loss: L1 distance between the image gradients of prediction and target (report eq. 5)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GradientMode = Literal["abs", "signed"]
GRADIENT_MODES: tuple[str, ...] = ("abs", "signed")


def forward_differences(image: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
    """Horizontal and vertical forward differences, zero in the last column / row.

    Parameters
    ----------
    image : (B, C, H, W) tensor
    signed : bool
        Keep the sign of the differences; by default their absolute value (the reference).

    Returns
    -------
    (B, 2C, H, W) tensor
        ``[dx, dy]`` concatenated on the channel axis, with
        ``dx[..., i, j] = image[..., i, j+1] - image[..., i, j]`` and
        ``dy[..., i, j] = image[..., i+1, j] - image[..., i, j]``.
    """
    dx = F.pad(image[..., :, 1:] - image[..., :, :-1], (0, 1))
    dy = F.pad(image[..., 1:, :] - image[..., :-1, :], (0, 0, 0, 1))
    grads = torch.cat([dx, dy], dim=1)
    return grads if signed else grads.abs()


class GradientLoss(nn.Module):
    """``mean |grad(x) - grad(y)|`` over both directions and every pixel.

    Parameters
    ----------
    mode : {"abs", "signed"}
        ``"abs"`` (default, the reference): compare absolute forward differences, so an edge
        with the wrong polarity is not penalised. ``"signed"``: compare signed differences.

    Shapes: ``x``, ``y``: ``(B, C, H, W)``. The mean runs over ``B * 2C * H * W`` values,
    including the zero last column of ``dx`` and last row of ``dy`` (as the reference).
    Returns a 0-d float32 tensor.
    """

    def __init__(self, *, mode: GradientMode = "abs") -> None:
        super().__init__()
        if mode not in GRADIENT_MODES:
            raise ValueError(f"mode must be one of {GRADIENT_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"prediction shape {tuple(x.shape)} != target shape {tuple(y.shape)}")
        signed = self.mode == "signed"
        return F.l1_loss(
            forward_differences(x.float(), signed=signed), forward_differences(y.float(), signed=signed)
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
