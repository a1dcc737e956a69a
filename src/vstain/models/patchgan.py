"""Conditional PatchGAN discriminator (pix2pix ``NLayerDiscriminator``), the C2/C3 critic.

Input: (B, ``in_channels``, H, W) = the brightfield stack concatenated with a real or generated
image (7 + 1 = 8 channels in the reference). Output: (B, 1, H', W') raw scores, one per patch
(no sigmoid: the relativistic least-squares loss works on raw scores). Kernel 4, padding 1;
``n_layers`` stride-2 convs (the first without normalisation) then two stride-1 convs, so
H' = H/2^n_layers - 2 (30x30 for a 512² input at n_layers 4; receptive field 142x142).
Reference settings (8 in, ndf 32, n_layers 4, BatchNorm) give exactly 1,746,337 parameters.
"""

from __future__ import annotations

from torch import Tensor, nn

from vstain.errors import ConfigError

__all__ = ["PatchGAN", "INITS"]

INITS = ("normal", "default")


class PatchGAN(nn.Module):
    """pix2pix PatchGAN with BatchNorm and LeakyReLU(0.2).

    Parameters
    ----------
    in_channels : brightfield planes + image channels (8).
    ndf : filters of the first conv; doubled per stride-2 layer, capped at 8·ndf.
    n_layers : number of stride-2 convs (4 in the reference, 3 gives pix2pix's 70x70 field).
    init : ``"normal"`` draws conv weights from N(0, 0.02) and BatchNorm weights from N(1, 0.02)
        with zero bias (the pix2pix init the reference defined but never applied);
        ``"default"`` keeps PyTorch's init, reproducing the reference.
    """

    def __init__(
        self, in_channels: int = 8, *, ndf: int = 32, n_layers: int = 4, init: str = "normal"
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        if n_layers < 1:
            raise ConfigError(f"n_layers must be at least 1, got {n_layers}")
        kw = dict(kernel_size=4, padding=1)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, stride=2, **kw),
            nn.LeakyReLU(0.2),
        ]
        channels = ndf
        # Strides: n_layers - 1 more stride-2 convs, then one stride-1 conv, all normalised.
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                # BatchNorm has its own shift, so these convs carry no bias.
                nn.Conv2d(channels, out, stride=stride, bias=False, **kw),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, stride=1, **kw))
        self.model = nn.Sequential(*layers)
        self.init = init
        if init == "normal":
            self.apply(_normal_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _normal_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
