"""SegmentationBCE: two independent sigmoids against a one-hot mask; empty masks work."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vstain.losses import SegmentationBCE, binary_mask_index, binary_one_hot

BCE = SegmentationBCE()


def test_bce_hand_value():
    # pixel 0: background, logits (0, 0)       -> ln2 + ln2
    # pixel 1: foreground, logits (ln3, ln3): ch0 target 0: -ln(1 - 3/4) = ln4; ch1 target 1: -ln(3/4)
    # mean over 4 values = ln(2 * 2 * 4 * 4/3) / 4 = ln(64/3) / 4
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]]).view(1, 2, 1, 2)
    mask = torch.tensor([[0, 1]]).view(1, 1, 2)
    assert BCE(logits, mask).item() == pytest.approx(math.log(64 / 3) / 4, rel=1e-6)


def test_bce_without_foreground_does_not_crash():
    logits = torch.zeros(2, 2, 3, 3)
    empty = torch.zeros(2, 3, 3)
    # every value is BCE(0, t) = ln 2
    assert BCE(logits, empty).item() == pytest.approx(math.log(2))
    assert binary_one_hot(empty).shape == (2, 2, 3, 3)
    # The reference's inferred class count gives one channel here, hence its crash.
    assert F.one_hot(empty.long()).shape[-1] == 1


def test_mask_forms_agree_and_weights_scale():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, generator=gen)
    labels = torch.randint(0, 4, (2, 4, 4), generator=gen)  # a label image: > 0 is foreground
    ref = BCE(logits, labels)
    assert BCE(logits, (labels > 0).unsqueeze(1)).item() == pytest.approx(ref.item())
    assert BCE(logits, (labels > 0).float()).item() == pytest.approx(ref.item())
    assert binary_mask_index(labels).max().item() == 1
    assert BCE(logits, labels, weight=torch.full((2, 1, 4, 4), 2.0)).item() == pytest.approx(2 * ref.item())


def test_bce_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        BCE(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="do not match"):
        BCE(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="mask"):
        BCE(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))


def test_bce_gradient_reaches_logits():
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    BCE(logits, torch.tensor([[[0, 1], [1, 0]]])).backward()
    # d/dz mean(BCE) = (sigmoid(0) - t) / 8 = +-1/16
    assert logits.grad.abs().flatten().tolist() == pytest.approx([1 / 16] * 8)
