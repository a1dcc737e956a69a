"""Cost helpers: parameters, forward FLOPs on the meta device, saved activation bytes."""

from __future__ import annotations

import torch
from torch import nn

from vstain.models import build_model
from vstain.models.cost import count_parameters, forward_flops, saved_activation_bytes


def test_forward_flops_of_one_conv_is_two_per_multiply_add() -> None:
    conv = nn.Conv2d(2, 3, kernel_size=3, padding=1)
    # 3 outputs x 2 inputs x 9 taps x 16 pixels multiply-adds, 2 FLOPs each
    assert forward_flops(conv, (1, 2, 4, 4)) == 2 * 3 * 2 * 9 * 16
    assert conv.weight.device.type == "cpu"  # the model itself stays where it was


def test_reference_generator_flops_scale_with_pixels() -> None:
    model = build_model("tiramisu")
    small = forward_flops(model, (1, 7, 64, 64))
    large = forward_flops(model, (1, 7, 128, 128))
    assert large == 4 * small


def test_count_parameters_trainable_only() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 8 + 3
    assert count_parameters(model, trainable_only=True) == 3


def test_saved_activation_bytes_of_a_relu_chain() -> None:
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU())
    x = torch.rand(8, 4)
    # Linear saves its input x (the weight is excluded as a parameter), ReLU saves its output.
    assert saved_activation_bytes(model, x) == 2 * 8 * 4 * 4
    assert not x.requires_grad
