"""Multi-output Tiramisu: the 7 brightfield planes → all stains in one pass over one encoder.

Design. What brightfield "means" (cell outlines, droplets, defocus cues) is the same whatever the
stain, so one encoder serves every output; the decoders, which rebuild stain-specific
full-resolution detail (round nuclei, bright droplets, diffuse cytoplasm), are where the stains
differ. Two layouts:

* ``decoders="separate"`` (default): one full decoder + 1x1 head per stain. The encoder runs once
  instead of three times while each stain keeps its own reconstruction path.
* ``decoders="shared"``: one decoder and a 1x1 head with ``out_channels`` outputs — the cost of a
  single generator, for speed when the stains can share features.

Measured (reference widths, forward FLOPs counted with :func:`vstain.models.cost.forward_flops`):

==========================  ===========  ===============
network                     parameters   GFLOP per 512²
==========================  ===========  ===============
3 x ``tiramisu``            3,692,739    310.0
``tiramisu_multi``          2,720,451    239.1 (77 %)
``tiramisu_multi`` shared   1,231,299    103.5 (33 %)
==========================  ===========  ===============

The encoder is 35.5 of a generator's 103.3 GFLOP; the full-resolution decoder stage dominates,
which is why sharing only the encoder saves less than a quarter.

Output (B, ``out_channels``, H, W) in (0, 1), channel order = ``vstain.vocabulary.TARGETS``
(nuclei, lipids, cytoplasm) for the default 3 outputs. Any H, W (padded and cropped back).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vstain.errors import ConfigError
from vstain.models.layers import crop_to, initialise_output_bias, make_output_activation, pad_to_multiple
from vstain.models.tiramisu import TiramisuDecoder, TiramisuEncoder

__all__ = ["MultiTiramisu", "DECODER_LAYOUTS"]

DECODER_LAYOUTS = ("separate", "shared")


class MultiTiramisu(nn.Module):
    """One Tiramisu encoder feeding one decoder per output (``"separate"``) or one for all.

    Parameters are those of :class:`~vstain.models.tiramisu.Tiramisu` (``out_channels`` defaults
    to 3) plus ``decoders``: ``"separate"`` or ``"shared"`` (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int = 7,
        out_channels: int = 3,
        *,
        decoders: str = "separate",
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
    ) -> None:
        super().__init__()
        if decoders not in DECODER_LAYOUTS:
            raise ConfigError(
                f"unknown decoders {decoders!r}; choose one of {', '.join(DECODER_LAYOUTS)}"
            )
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
        n_decoders = out_channels if decoders == "separate" else 1
        self.decoders = nn.ModuleList(
            TiramisuDecoder(
                self.encoder.out_channels,
                skip_channels=self.encoder.skip_channels,
                up_blocks=up_blocks,
                growth_rate=growth_rate,
                dropout=dropout,
                efficient=efficient,
            )
            for _ in range(n_decoders)
        )
        per_head = out_channels // n_decoders
        self.heads = nn.ModuleList(
            nn.Conv2d(decoder.out_channels, per_head, kernel_size=1, bias=True)
            for decoder in self.decoders
        )
        self.activation = make_output_activation(output_activation)
        self.size_multiple = 2**self.encoder.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.size_multiple)
        bottleneck, skips = self.encoder(x)
        outputs = [head(decoder(bottleneck, skips)) for decoder, head in zip(self.decoders, self.heads)]
        return crop_to(self.activation(torch.cat(outputs, dim=1)), size)

    def set_output_level(self, levels: Sequence[float]) -> None:
        """Start each output channel at its level in ``levels`` (see :func:`initialise_output_bias`)."""
        levels = list(levels)
        per_head = len(levels) // len(self.heads)
        for i, head in enumerate(self.heads):
            initialise_output_bias(head, self.activation, levels[i * per_head : (i + 1) * per_head])
