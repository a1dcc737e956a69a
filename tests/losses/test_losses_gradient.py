"""GradientLoss: absolute (reference) vs signed forward differences, hand-computed."""

from __future__ import annotations

import pytest
import torch

from vstain.losses import GradientLoss, forward_differences


def t(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, 2, 2)


def test_forward_differences_zero_last_row_and_column():
    x = t([[0, 1], [3, 7]])
    grads = forward_differences(x, signed=True)
    assert grads.shape == (1, 2, 2, 2)
    assert grads[0, 0].tolist() == [[1, 0], [4, 0]]  # dx: 1-0, 7-3, last column 0
    assert grads[0, 1].tolist() == [[3, 6], [0, 0]]  # dy: 3-0, 7-1, last row 0


def test_gradient_loss_against_zero_image():
    # |dx| = [[1,0],[4,0]], |dy| = [[3,6],[0,0]] vs zeros: (1 + 4 + 3 + 6) / 8 = 1.75
    x, y = t([[0, 1], [3, 7]]), torch.zeros(1, 1, 2, 2)
    assert GradientLoss()(x, y).item() == pytest.approx(1.75)
    assert GradientLoss(mode="signed")(x, y).item() == pytest.approx(1.75)


def test_abs_and_signed_differ_on_mirrored_edges():
    x = t([[0, 1], [3, 7]])
    y = t([[1, 0], [7, 3]])  # left-right mirror: dx = [[-1,0],[-4,0]], dy = [[6,3],[0,0]]
    # abs: |dx| equal -> 0; |dy| [3,6] vs [6,3] -> 3 + 3; mean over 8 = 0.75
    assert GradientLoss(mode="abs")(x, y).item() == pytest.approx(0.75)
    # signed: dx |1-(-1)| + |4-(-4)| = 10; dy 3 + 3 = 6 -> 16 / 8 = 2.0
    assert GradientLoss(mode="signed")(x, y).item() == pytest.approx(2.0)


def test_gradient_loss_is_zero_for_an_offset_copy_and_flows_to_x():
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(2, 1, 9, 11, generator=gen)
    assert GradientLoss()(y + 0.1, y).item() == pytest.approx(0.0, abs=1e-6)
    x = torch.rand(2, 1, 9, 11, generator=gen, requires_grad=True)
    loss = GradientLoss(mode="signed")(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.equal(loss, GradientLoss(mode="signed")(x.detach().clone(), y.clone()))


def test_gradient_loss_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        GradientLoss(mode="sobel")
