"""The LUPI nuclei network (C1): one encoder, a segmentation decoder guiding a regression decoder.

Learning Using Privileged Information: the nucleus masks are only available in training, as the
target of a segmentation decoder whose features steer the fluorescence (regression) decoder.

Forward contract (the training and inference code rely on it)
-------------------------------------------------------------
Input ``x``: (B, in_channels, H, W), any H and W (padded internally to a multiple of
2^len(down_blocks), outputs cropped back).

* ``model.train()``: returns ``(seg_logits, image, [side0, side1, side2])``
* ``model.eval()``:  returns ``(seg_logits, image)``

``seg_logits``: (B, seg_classes, H, W) raw logits (no activation; class 1 = nucleus).
``image``: (B, out_channels, H, W) in (0, 1) after the scaled tanh.
``side_k``: (B, out_channels, ceil(H/(d·2^(3-k))), ceil(W/(d·2^(3-k)))) for the reference depth 4
and ``downsample`` d, i.e. 1/8, 1/4 and 1/2 of the input size when d = 1: *raw* 1x1-conv
outputs after regression blocks 0, 1, 2 (the loss applies the scaled tanh), one per decoder stage
except the last.

Architecture (inventory §2.3)
-----------------------------
Encoder as in :class:`~vstain.models.tiramisu.Tiramisu`. The segmentation decoder has no encoder
skips: TU → dense block, the last block keeping its input, then 1x1 → logits. The regression
decoder has encoder skips; before its transition up ``i`` its input is fused with a guide
``s_i``: ``s_0`` = the bottleneck (so with ``fusion="sum"`` step 0 receives 2·bottleneck, as in
the reference code) and ``s_1..`` = the outputs of segmentation blocks ``0..``.
``fusion="sum"`` is what the reference code does; ``"multiply"`` is what its report's text
describes. After the regression decoder an extra dense block (``final_layers`` layers of growth
``final_growth``, keeping its input) → 1x1 → scaled tanh. Reference settings (32 initial filters)
give exactly 1,602,166 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vstain.errors import ConfigError
from vstain.models.layers import (
    DenseBlock,
    ScaledTanh,
    check_downsample,
    crop_to,
    initialise_output_bias,
    make_output_activation,
    pad_to_multiple,
    upsample_output,
)
from vstain.models.tiramisu import TiramisuDecoder, TiramisuEncoder

__all__ = ["LupiTiramisu", "FUSIONS"]

FUSIONS = ("sum", "multiply")


class LupiTiramisu(nn.Module):
    """LUPI FC-DenseNet with segmentation-guided regression and loss-weight-module side outputs.

    Parameters are those of :class:`~vstain.models.tiramisu.Tiramisu` plus
    ``seg_classes`` (segmentation logits, 2 = background/nucleus), ``fusion`` (``"sum"`` or
    ``"multiply"``), ``final_layers`` and ``final_growth`` (the extra regression dense block),
    ``seg_skips`` (give the segmentation decoder the encoder skips too; ``False`` is the
    reference), ``downsample`` (run the network on ``downsample`` x ``downsample`` averaged input
    pixels and upsample its outputs bilinearly; 1 is the reference). See the module docstring for
    the forward contract.

    ``downsample`` scales the receptive field with the nuclei: a nucleus is 30-45 px across at 20x
    but 90-140 px at 60x, wider than what four down blocks see, and the short CPU runs then drew
    fragments of nuclei. Hoechst nuclei are smooth blobs, so working on averaged pixels loses
    little, and it costs ``downsample``² times less per pixel (docs/training.md, "The CPU recipe").

    Without skips the segmentation decoder rebuilds nucleus outlines from the bottleneck alone
    (1/16 of the input size with four down blocks, where a 20x nucleus is under a pixel): in short
    CPU runs it stayed at "background everywhere" (``val/iou`` 0) while the regression decoder,
    which has the skips, already drew the nuclei. ``seg_skips=True`` is the CPU recipe's choice.
    """

    def __init__(
        self,
        in_channels: int = 7,
        out_channels: int = 1,
        *,
        seg_classes: int = 2,
        init_filters: int = 32,
        down_blocks: Sequence[int] = (4, 4, 4, 4),
        bottleneck_layers: int = 4,
        up_blocks: Sequence[int] = (4, 4, 4, 4),
        growth_rate: int = 12,
        dropout: float = 0.2,
        compression: float = 1.0,
        transition_dropout: float = 0.2,
        fusion: str = "sum",
        final_layers: int = 2,
        final_growth: int = 2,
        efficient: bool = False,
        output_activation: str = "tanh_scaled",
        seg_skips: bool = False,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.downsample = check_downsample(downsample)
        self.fusion = fusion
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
        common = dict(up_blocks=up_blocks, growth_rate=growth_rate, dropout=dropout, efficient=efficient)
        self.seg_skips = bool(seg_skips)
        self.seg_decoder = TiramisuDecoder(
            self.encoder.out_channels, skip_channels=self.encoder.skip_channels if seg_skips else None, **common
        )
        self.reg_decoder = TiramisuDecoder(
            self.encoder.out_channels, skip_channels=self.encoder.skip_channels, **common
        )
        # The guide s_i is added to (or multiplies) the regression features, so widths must agree.
        guide_channels = [self.encoder.out_channels, *self.seg_decoder.block_channels[:-1]]
        reg_inputs = [self.encoder.out_channels, *self.reg_decoder.block_channels[:-1]]
        if guide_channels != reg_inputs:
            raise ConfigError(
                f"LUPI fusion needs equal widths in both decoders, got {guide_channels} vs "
                f"{reg_inputs}; use the same up_blocks and growth_rate for both"
            )
        self.seg_head = nn.Conv2d(self.seg_decoder.out_channels, seg_classes, kernel_size=1, bias=True)
        self.side_heads = nn.ModuleList(
            nn.Conv2d(c, out_channels, kernel_size=1, bias=True)
            for c in self.reg_decoder.block_channels[:-1]
        )
        self.final_block = DenseBlock(
            self.reg_decoder.out_channels,
            final_growth,
            final_layers,
            keep_input=True,
            dropout=dropout,
            efficient=efficient,
        )
        self.head = nn.Conv2d(self.final_block.out_channels, out_channels, kernel_size=1, bias=True)
        self.activation = make_output_activation(output_activation)
        self.size_multiple = 2**self.encoder.depth * downsample

    def _fuse(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return x + guide if self.fusion == "sum" else x * guide

    def forward(
        self, x: torch.Tensor, full_size: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]] | tuple[torch.Tensor, torch.Tensor]:
        """``(seg_logits, image[, side outputs in training])`` for input ``x``.

        ``full_size=False`` returns the segmentation logits and the image at the working scale
        (``ceil(size / downsample)``, before the bilinear upsampling), for a loss computed there.
        """
        x, size = pad_to_multiple(x, self.size_multiple)
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        bottleneck, skips = self.encoder(x)
        skips_coarse_first = skips[::-1]
        seg = bottleneck
        reg = bottleneck
        guide = bottleneck
        sides = []
        n_steps = len(self.reg_decoder)
        for i in range(n_steps):
            reg = self.reg_decoder.step(i, self._fuse(reg, guide), skips_coarse_first[i])
            seg = self.seg_decoder.step(i, seg, skips_coarse_first[i] if self.seg_skips else None)
            guide = seg
            if self.training and i < n_steps - 1:
                scale = 2 ** (n_steps - 1 - i) * self.downsample
                sides.append(crop_to(self.side_heads[i](reg), size, scale=scale))
        seg_logits = self.seg_head(seg)
        # Upsampled after the activation: a bilinear weighting of values in (0, 1) stays in (0, 1).
        image = self.activation(self.head(self.final_block(reg)))
        scale = 1 if full_size else self.downsample
        if full_size:
            seg_logits, image = upsample_output(seg_logits, self.downsample), upsample_output(image, self.downsample)
        seg_logits, image = crop_to(seg_logits, size, scale=scale), crop_to(image, size, scale=scale)
        if self.training:
            return seg_logits, image, sides
        return seg_logits, image

    def set_output_level(self, levels: Sequence[float]) -> None:
        """Start the image output and the side outputs at ``levels`` (see :func:`initialise_output_bias`).

        The side outputs go through the same scaled tanh in the loss, so they start there too.
        """
        initialise_output_bias(self.head, self.activation, levels)
        for side in self.side_heads:
            initialise_output_bias(side, ScaledTanh(), levels)
