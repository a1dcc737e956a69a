"""build_loss: every name builds, bad names/arguments/values become one-line ConfigErrors."""

from __future__ import annotations

import pytest
import torch

from vstain.errors import ConfigError
from vstain.losses import LOSSES, GradientLoss, LupiLoss, MedianMAE, build_loss


def test_every_registered_name_builds_with_defaults():
    assert set(LOSSES) >= {"log_squared", "median_mae", "gradient", "bce", "lwm", "lupi", "ralsgan_d", "ralsgan_g"}
    for name, cls in LOSSES.items():
        assert isinstance(build_loss(name), cls)


def test_arguments_are_passed_through():
    loss = build_loss("median_mae", median="batch", eps=0.01)
    assert isinstance(loss, MedianMAE) and loss.median == "batch" and loss.eps == 0.01
    assert build_loss("gradient", mode="signed").mode == "signed"
    lupi = build_loss("lupi", resize="nearest", median="batch")
    assert isinstance(lupi, LupiLoss) and lupi.lwm.resize == "nearest"
    x = torch.rand(1, 1, 4, 4)
    assert build_loss("gradient")(x, x).item() == 0.0
    assert isinstance(build_loss("gradient"), GradientLoss)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("l2", {}, r"unknown loss 'l2'; choose one of: log_squared, median_mae"),
        ("median_mae", {"medain": "batch"}, r"loss 'median_mae': unknown argument\(s\) medain; accepted: median, eps"),
        ("bce", {"pos_weight": 2}, r"unknown argument\(s\) pos_weight; accepted: none"),
        ("median_mae", {"median": "mean"}, r"loss 'median_mae': median must be one of"),
        ("log_squared", {"eps": -1}, r"loss 'log_squared': eps must be > 0"),
        ("lwm", {"resize": "cubic"}, r"loss 'lwm': resize must be one of"),
    ],
)
def test_bad_configuration_raises_one_line_config_error(name, kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_loss(name, **kwargs)
    assert "\n" not in str(info.value)
