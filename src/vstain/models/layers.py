"""Building blocks of the FC-DenseNet (Tiramisu) family.

Dense layer and block, transition down, transition up by pixel shuffle + blur (Sugawara et al.
2019) with ICNR initialisation (Aitken et al. 2017), the scaled tanh output, and the padding helper
that lets every network accept any input size.

Memory-efficient dense layers
-----------------------------
``DenseLayer(efficient=True)`` recomputes concat → BatchNorm → ReLU → conv3x3 in the backward pass
(gradient checkpointing) instead of keeping the concatenated, normalised and rectified maps alive.
A naive checkpoint runs BatchNorm twice in training mode and so moves its running statistics
twice per step (the reference's latent bug). Here the recompute is flagged through the
checkpoint's ``context_fn`` and, while the flag is up, BatchNorm runs functionally on throwaway
copies of its running statistics: in training mode it normalises with the batch statistics, so its
output is bit-identical to the first pass, and the module's running statistics and
``num_batches_tracked`` are touched exactly once per step. The copies are two C-length vectors per
layer; no save/restore of module state and no momentum bookkeeping is needed, and the module's
own forward (with its ``num_batches_tracked``/cumulative-average logic) stays the single source of
truth for the one real update.

Measured with :func:`vstain.models.cost.saved_activation_bytes` (one 256² sample, fp32): the
reference Tiramisu keeps 936 MiB for backward, 345 MiB when efficient; LUPI 1,262 → 466 MiB
(2.7x less; ×4 for a 512² crop), at the price of recomputing the dense layers' convs.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vstain.errors import ConfigError

__all__ = [
    "DenseLayer",
    "DenseBlock",
    "TransitionDown",
    "TransitionUp",
    "Blur2x2",
    "ScaledTanh",
    "make_output_activation",
    "icnr_",
    "pad_to_multiple",
    "crop_to",
    "check_downsample",
    "upsample_output",
]


class _RecomputeFlag(threading.local):
    active: bool = False


_RECOMPUTE = _RecomputeFlag()


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    previous = _RECOMPUTE.active
    _RECOMPUTE.active = True
    try:
        yield
    finally:
        _RECOMPUTE.active = previous


def _checkpoint_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _recomputing()


def _batch_norm(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if _RECOMPUTE.active and norm.training and norm.running_mean is not None:
        # Recompute pass: training-mode BN normalises with the batch statistics, so the output
        # equals the first pass; the running-stat update goes to throwaway copies. (Passing None
        # instead would change which tensors autograd saves, which checkpointing rejects.)
        return F.batch_norm(
            x,
            norm.running_mean.clone(),
            norm.running_var.clone(),
            norm.weight,
            norm.bias,
            True,
            norm.momentum if norm.momentum is not None else 0.0,
            norm.eps,
        )
    return norm(x)


class DenseLayer(nn.Module):
    """BN → ReLU → conv3x3 (``in_channels`` → ``growth_rate``) → element-wise dropout.

    ``forward`` takes the list of feature maps produced so far in the block (concatenated along
    channels first), so the concatenation can live inside the checkpointed region.
    """

    def __init__(
        self, in_channels: int, growth_rate: int, *, dropout: float = 0.2, efficient: bool = False
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=True)
        self.dropout = dropout
        self.efficient = efficient

    def _bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        x = torch.cat(features, dim=1) if len(features) > 1 else features[0]
        return self.conv(F.relu(_batch_norm(self.norm, x)))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.efficient and self.training and torch.is_grad_enabled():
            out = checkpoint(
                self._bottleneck,
                *features,
                use_reentrant=False,
                context_fn=_checkpoint_contexts,
            )
        else:
            out = self._bottleneck(*features)
        return F.dropout(out, p=self.dropout, training=self.training)


class DenseBlock(nn.Module):
    """``n_layers`` densely connected :class:`DenseLayer` s.

    Layer ``i`` sees the block input and the ``i`` previous outputs (``in_channels + i·growth``
    channels). With ``keep_input=True`` the block returns concat(input, new maps)
    (``in_channels + n_layers·growth`` channels: encoder blocks and the last decoder block);
    otherwise only the new maps (``n_layers·growth``: bottleneck and inner decoder blocks), which
    keeps the decoder from growing quadratically.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        n_layers: int,
        *,
        keep_input: bool,
        dropout: float = 0.2,
        efficient: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, dropout=dropout, efficient=efficient)
            for i in range(n_layers)
        )
        self.keep_input = keep_input
        self.in_channels = in_channels
        self.out_channels = (in_channels if keep_input else 0) + n_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features if self.keep_input else features[1:], dim=1)


class TransitionDown(nn.Module):
    """BN → ReLU → conv1x1 (``in`` → ``int(in·compression)``) → Dropout2d → max-pool 2x2."""

    def __init__(
        self, in_channels: int, *, compression: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.out_channels = int(in_channels * compression)
        self.block = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, self.out_channels, kernel_size=1, bias=True),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def icnr_(weight: torch.Tensor, bias: torch.Tensor | None = None, *, scale: int = 2) -> torch.Tensor:
    """ICNR-initialise, in place, a conv feeding ``PixelShuffle(scale)``.

    A Kaiming-normal kernel is drawn for each *output* channel of the shuffle and copied to its
    ``scale²`` sub-pixel filters, so the layer starts as nearest-neighbour upsampling of a normal
    conv (no checkerboard at initialisation). The bias, if given, is made equal across sub-pixels
    in the same way.

    Parameters
    ----------
    weight : (C·scale², C_in, k, k) conv weight.
    bias : optional (C·scale²,) conv bias.
    scale : upsampling factor of the following pixel shuffle.
    """
    n_sub = scale * scale
    out_channels, *rest = weight.shape
    if out_channels % n_sub:
        raise ValueError(f"ICNR needs output channels divisible by {n_sub}, got {out_channels}")
    with torch.no_grad():
        base = torch.empty(out_channels // n_sub, *rest, dtype=weight.dtype, device=weight.device)
        nn.init.kaiming_normal_(base)
        # PixelShuffle maps input channel c·scale² + k to sub-pixel k of output channel c.
        weight.copy_(base.repeat_interleave(n_sub, dim=0))
        if bias is not None:
            bias.copy_(bias[::n_sub].repeat_interleave(n_sub))
    return weight


class Blur2x2(nn.Module):
    """2x2 box filter keeping the size: replicate-pad 1 px left and top, average-pool 2x2 stride 1.

    Same numbers as ``ReplicationPad2d((1, 0, 1, 0))`` + ``AvgPool2d(2, stride=1)``; the padding is
    written as a concatenation because torch.compile's inductor (torch 2.13) fails to compile a
    replication pad fused after a pixel shuffle ("vr must not be None for symbol q1").
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., :1, :], x], dim=-2)
        x = torch.cat([x[..., :1], x], dim=-1)
        return F.avg_pool2d(x, 2, stride=1)


class TransitionUp(nn.Module):
    """×2 upsampling: conv3x3 (C → 4C) → ReLU → PixelShuffle(2) → blur.

    The blur is Sugawara et al.'s 2x2 box filter: replicate-pad one pixel on the left and top and
    average-pool 2x2 with stride 1, which keeps the size. The conv is ICNR-initialised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, kernel_size=3, padding=1, bias=True)
        icnr_(self.conv.weight, self.conv.bias, scale=2)
        self.shuffle = nn.PixelShuffle(2)
        self.blur = Blur2x2()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.shuffle(F.relu(self.conv(x))))


class ScaledTanh(nn.Module):
    """``(tanh(x) + 1) / 2``: a steeper-than-sigmoid squashing into (0, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x) + 1) / 2


OUTPUT_ACTIVATIONS = ("tanh_scaled", "sigmoid")


def initialise_output_bias(head: nn.Conv2d, activation: nn.Module, levels: Sequence[float]) -> None:
    """Set ``head``'s bias so that, with zero input features, the output equals ``levels``.

    A freshly initialised network then starts at the targets' typical level (e.g. their median on
    the normalised scale) instead of the activation's midpoint 0.5: a dark, sparse stain (nuclei:
    a median near 0.02) no longer spends its first steps pulling every pixel down from 0.5.
    Levels are clamped to [0.005, 0.995] to keep the inverse finite.

    Parameters
    ----------
    head
        The final 1x1 convolution (``out_channels == len(levels)``).
    activation
        The output activation that follows it (:class:`ScaledTanh` or ``nn.Sigmoid``).
    levels
        One target level per output channel, on the (0, 1) output scale.
    """
    values = torch.as_tensor(list(levels), dtype=torch.float64).clamp(0.005, 0.995)
    if head.bias is None or head.bias.numel() != values.numel():
        raise ValueError(f"{values.numel()} level(s) for a head with {head.out_channels} output(s)")
    if isinstance(activation, ScaledTanh):
        bias = torch.atanh(2 * values - 1)
    elif isinstance(activation, nn.Sigmoid):
        bias = torch.logit(values)
    else:
        raise ValueError(f"cannot invert the output activation {type(activation).__name__}")
    with torch.no_grad():
        head.bias.copy_(bias.to(head.bias.dtype))


def make_output_activation(name: str) -> nn.Module:
    """The final squashing named ``name``: ``"tanh_scaled"`` (reference) or ``"sigmoid"``.

    ``"sigmoid"`` is offered because the released C2/C3 weights may have been trained with it
    (the reference switched its default on the deadline day).
    """
    if name == "tanh_scaled":
        return ScaledTanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ConfigError(
        f"unknown output_activation {name!r}; choose one of {', '.join(OUTPUT_ACTIVATIONS)}"
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` (B, C, H, W) at the bottom and right so H and W are multiples of ``multiple``.

    Reflect padding is used where the image is large enough for it (pad < side), replicate
    otherwise. Padding only bottom/right keeps pixel (0, 0) at the origin at every scale, so
    coarse side outputs can be cropped back exactly. Returns the padded tensor and (H, W).
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (height, width)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int], *, scale: int = 1) -> torch.Tensor:
    """Crop ``x`` to the top-left ``ceil(size / scale)`` pixels (undo :func:`pad_to_multiple`)."""
    height = math.ceil(size[0] / scale)
    width = math.ceil(size[1] / scale)
    if x.shape[-2] == height and x.shape[-1] == width:
        return x
    return x[..., :height, :width]


def check_downsample(value: object) -> int:
    """``model.args.downsample`` as a whole number >= 1, or a :class:`ConfigError` naming the key."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.args.downsample must be a whole number >= 1, got {value!r}")
    return value


def upsample_output(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling of a network's working-scale output by ``factor`` (identity for 1).

    Applied after the output activation, a bilinear weighting of values in (0, 1) stays in (0, 1).
    A scale factor, not a size: the padded input is a multiple of ``factor``, so both give the same
    pixels, and a scale keeps an ONNX export valid for every input size.
    """
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)
