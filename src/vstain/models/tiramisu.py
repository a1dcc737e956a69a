"""FC-DenseNet ("Tiramisu", Jégou et al. 2017) generator: the C2/C3 network of the reference.

Encoder and decoder are separate modules so the LUPI and multi-output networks reuse them.
With the reference settings (7 → 1, 48 initial filters, blocks 4-4-4-4, bottleneck 4, growth 12)
the channel trace is 48 → 96/144/192/240 (skips) → 48 (bottleneck) → 48/48/48 → 192 → 1 and the
network has exactly 1,230,913 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vstain.errors import ConfigError
from vstain.models.layers import (
    DenseBlock,
    TransitionDown,
    TransitionUp,
    check_downsample,
    crop_to,
    initialise_output_bias,
    make_output_activation,
    pad_to_multiple,
    upsample_output,
)

__all__ = ["TiramisuEncoder", "TiramisuDecoder", "Tiramisu"]


def _check_blocks(name: str, blocks: Sequence[int]) -> tuple[int, ...]:
    blocks = tuple(int(b) for b in blocks)
    if not blocks or any(b < 1 for b in blocks):
        raise ConfigError(f"{name} must be a non-empty list of positive layer counts, got {list(blocks)}")
    return blocks


class TiramisuEncoder(nn.Module):
    """conv3x3 → [dense block (keeps input) → transition down] × n → bottleneck dense block.

    ``forward(x)`` returns ``(bottleneck, skips)``: the bottleneck's new feature maps
    (``bottleneck_layers·growth`` channels at 1/2ⁿ) and the dense-block outputs before each
    transition down, finest first (``skip_channels``).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        init_filters: int,
        down_blocks: Sequence[int],
        bottleneck_layers: int,
        growth_rate: int,
        dropout: float,
        compression: float = 1.0,
        transition_dropout: float = 0.2,
        efficient: bool = False,
    ) -> None:
        super().__init__()
        down_blocks = _check_blocks("down_blocks", down_blocks)
        self.conv_init = nn.Conv2d(in_channels, init_filters, kernel_size=3, padding=1, bias=True)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.skip_channels: list[int] = []
        channels = init_filters
        for n_layers in down_blocks:
            block = DenseBlock(
                channels, growth_rate, n_layers, keep_input=True, dropout=dropout, efficient=efficient
            )
            self.blocks.append(block)
            self.skip_channels.append(block.out_channels)
            down = TransitionDown(block.out_channels, compression=compression, dropout=transition_dropout)
            self.transitions.append(down)
            channels = down.out_channels
        self.bottleneck = DenseBlock(
            channels, growth_rate, bottleneck_layers, keep_input=False, dropout=dropout, efficient=efficient
        )
        self.out_channels = self.bottleneck.out_channels
        self.depth = len(down_blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.conv_init(x)
        skips = []
        for block, down in zip(self.blocks, self.transitions):
            x = block(x)
            skips.append(x)
            x = down(x)
        return self.bottleneck(x), skips


class TiramisuDecoder(nn.Module):
    """[transition up → concat(skip, up) → dense block] × n; the last block keeps its input.

    Parameters
    ----------
    in_channels : channels of the bottleneck features.
    skip_channels : encoder skip channels, finest first (as :class:`TiramisuEncoder` lists them),
        or ``None`` for a decoder without encoder skips (the LUPI segmentation decoder).
    up_blocks : layers per decoder block, coarsest first.

    ``step(i, x, skip)`` runs one stage so that composite networks can act between stages;
    ``forward(x, skips)`` runs them all. ``block_channels[i]`` is stage ``i``'s output width.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        skip_channels: Sequence[int] | None,
        up_blocks: Sequence[int],
        growth_rate: int,
        dropout: float,
        efficient: bool = False,
    ) -> None:
        super().__init__()
        up_blocks = _check_blocks("up_blocks", up_blocks)
        self.use_skips = skip_channels is not None
        if skip_channels is not None and len(skip_channels) != len(up_blocks):
            raise ConfigError(
                f"up_blocks has {len(up_blocks)} entries but there are {len(skip_channels)} "
                "down blocks; give one up block per down block"
            )
        skips_coarse_first = list(reversed(skip_channels)) if skip_channels is not None else None
        self.transitions = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.block_channels: list[int] = []
        channels = in_channels
        last = len(up_blocks) - 1
        for i, n_layers in enumerate(up_blocks):
            up = TransitionUp(channels)
            self.transitions.append(up)
            block_in = up.out_channels + (skips_coarse_first[i] if skips_coarse_first else 0)
            block = DenseBlock(
                block_in, growth_rate, n_layers, keep_input=i == last, dropout=dropout, efficient=efficient
            )
            self.blocks.append(block)
            self.block_channels.append(block.out_channels)
            channels = block.out_channels
        self.out_channels = channels

    def __len__(self) -> int:
        return len(self.blocks)

    def step(self, i: int, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """Stage ``i``: upsample ``x`` ×2, concatenate ``[skip, up]`` if skips are used, dense block."""
        x = self.transitions[i](x)
        if self.use_skips:
            if skip is None:
                raise ValueError("this decoder uses encoder skips; pass the matching skip tensor")
            x = torch.cat([skip, x], dim=1)
        return self.blocks[i](x)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        coarse_first = list(reversed(skips)) if skips is not None else [None] * len(self)
        for i in range(len(self)):
            x = self.step(i, x, coarse_first[i] if self.use_skips else None)
        return x


class Tiramisu(nn.Module):
    """FC-DenseNet generator with pixel-shuffle + blur upsampling and a (0, 1) output.

    Input (B, ``in_channels``, H, W) of any size (padded internally to a multiple of
    ``downsample`` x 2^len(down_blocks) and cropped back); output (B, ``out_channels``, H, W) in (0, 1).

    Parameters
    ----------
    in_channels, out_channels : input planes (7 brightfield) and output stains.
    init_filters : width of the initial 3x3 conv.
    down_blocks, up_blocks : dense layers per encoder / decoder block (same length).
    bottleneck_layers : dense layers in the bottleneck.
    growth_rate : channels added by each dense layer.
    dropout : element-wise dropout after each dense layer.
    compression : channel factor of the transition-down 1x1 convs.
    transition_dropout : channel dropout in transition down (hard-coded 0.2 in the reference).
    efficient : checkpoint dense layers (see :mod:`vstain.models.layers`); same results, less memory.
    output_activation : ``"tanh_scaled"`` (reference, ``(tanh+1)/2``) or ``"sigmoid"``.
    downsample : run the network on ``downsample`` x ``downsample`` averaged input and upsample its
        output bilinearly (1, the reference: full resolution). It multiplies the receptive field
        by ``downsample`` at the same cost per working pixel, for structures larger than the
        network sees at full resolution (60x lipid droplets, docs/quality.md).
    """

    def __init__(
        self,
        in_channels: int = 7,
        out_channels: int = 1,
        *,
        init_filters: int = 48,
        down_blocks: Sequence[int] = (4, 4, 4, 4),
        bottleneck_layers: int = 4,
        up_blocks: Sequence[int] = (4, 4, 4, 4),
        growth_rate: int = 12,
        dropout: float = 0.2,
        compression: float = 1.0,
        transition_dropout: float = 0.2,
        efficient: bool = False,
        output_activation: str = "tanh_scaled",
        downsample: int = 1,
    ) -> None:
        super().__init__()
        self.downsample = check_downsample(downsample)
        self.encoder = TiramisuEncoder(
            in_channels,
            init_filters=init_filters,
            down_blocks=down_blocks,
            bottleneck_layers=bottleneck_layers,
            growth_rate=growth_rate,
            dropout=dropout,
            compression=compression,
            transition_dropout=transition_dropout,
            efficient=efficient,
        )
        self.decoder = TiramisuDecoder(
            self.encoder.out_channels,
            skip_channels=self.encoder.skip_channels,
            up_blocks=up_blocks,
            growth_rate=growth_rate,
            dropout=dropout,
            efficient=efficient,
        )
        self.head = nn.Conv2d(self.decoder.out_channels, out_channels, kernel_size=1, bias=True)
        self.activation = make_output_activation(output_activation)
        self.size_multiple = 2**self.encoder.depth * downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.size_multiple)
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        bottleneck, skips = self.encoder(x)
        out = self.activation(self.head(self.decoder(bottleneck, skips)))
        return crop_to(upsample_output(out, self.downsample), size)

    def set_output_level(self, levels: Sequence[float]) -> None:
        """Start the output at ``levels`` (one per output channel, see :func:`initialise_output_bias`)."""
        initialise_output_bias(self.head, self.activation, levels)

