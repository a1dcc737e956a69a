"""Name -> loss constructor, so configuration files can name their losses."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from vstain.errors import ConfigError
from vstain.losses.adversarial import RaLSGANDiscriminatorLoss, RaLSGANGeneratorLoss
from vstain.losses.gradient import GradientLoss
from vstain.losses.intensity import LogSquaredLoss, MedianMAE
from vstain.losses.loss_weight import LossWeightModuleLoss, LupiLoss
from vstain.losses.segmentation import SegmentationBCE

LOSSES: dict[str, type[nn.Module]] = {
    "log_squared": LogSquaredLoss,
    "median_mae": MedianMAE,
    "gradient": GradientLoss,
    "bce": SegmentationBCE,
    "lwm": LossWeightModuleLoss,
    "lupi": LupiLoss,
    "ralsgan_d": RaLSGANDiscriminatorLoss,
    "ralsgan_g": RaLSGANGeneratorLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Construct the loss registered as `name` with keyword options `kwargs`.

    Raises
    ------
    ConfigError
        For an unknown name, an unknown argument or an invalid value, in one line that names
        the loss and lists what is accepted.
    """
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        hint = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"loss {name!r}: unknown argument(s) {', '.join(unknown)}; accepted: {hint}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"loss {name!r}: {err}") from None
