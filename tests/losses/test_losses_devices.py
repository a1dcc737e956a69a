"""The losses and pools on the training device and under bf16 autocast (CPU always, CUDA if present)."""

from __future__ import annotations

import pytest
import torch

from vstain.losses import (
    GradientLoss,
    ImagePool,
    LogSquaredLoss,
    LupiLoss,
    MedianMAE,
    OutputHistoryPool,
    RaLSGANDiscriminatorLoss,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def batch(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=gen)
    y = torch.rand(2, 1, 32, 32, generator=gen) * 0.5
    s = torch.randn(2, 2, 32, 32, generator=gen)
    m = (torch.rand(2, 32, 32, generator=gen) > 0.8).long()
    side = [torch.randn(2, 1, n, n, generator=gen) for n in (4, 8, 16)]
    return [t.to(device) for t in (x, y, s, m)] + [[t.to(device) for t in side]]


@pytest.mark.parametrize("device", DEVICES)
def test_losses_match_cpu_values_and_survive_bf16_autocast(device):
    cpu = batch("cpu")
    dev = batch(device)
    for loss in (LogSquaredLoss(), MedianMAE(), GradientLoss()):
        assert loss(dev[0], dev[1]).item() == pytest.approx(loss(cpu[0], cpu[1]).item(), rel=1e-5)
    lupi = LupiLoss()
    x, y, s, m, side = dev
    total, _ = lupi(s, x, side, y, m)
    assert total.item() == pytest.approx(lupi(cpu[2], cpu[0], cpu[4], cpu[1], cpu[3])[0].item(), rel=1e-5)
    x.requires_grad_(True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        low, parts = lupi(s.bfloat16(), x.bfloat16(), [z.bfloat16() for z in side], y, m)
    assert low.dtype == torch.float32 and torch.isfinite(low)
    low.backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_pools_resume_from_a_cpu_checkpoint_on_the_device(device):
    pool = OutputHistoryPool(8)
    pool.push(torch.ones(3, 1, 2, 2))
    resumed = OutputHistoryPool()
    resumed.load_state_dict(pool.state_dict())  # a checkpoint loaded with map_location="cpu"
    resumed.push(torch.full((1, 1, 2, 2), 5.0, device=device))
    assert resumed.mean().device.type == device and resumed.mean().item() == pytest.approx(2.0)
    d_loss = RaLSGANDiscriminatorLoss()(
        torch.ones(1, 1, 2, 2, device=device), torch.zeros(1, 1, 2, 2, device=device),
        real_reference=resumed.mean(), fake_reference=resumed.mean(),
    )
    # 1/2 [ (1 - 2 - 1)^2 + (0 - 2 + 1)^2 ] = 1/2 (4 + 1)
    assert d_loss.item() == pytest.approx(2.5)

    images = ImagePool(2, probability=1.0, seed=0)
    state = ImagePool(2, probability=1.0, seed=0).state_dict() | {"items": [torch.zeros(1), torch.ones(1)]}
    images.load_state_dict(state)
    out = images.query(torch.full((1, 1), 7.0, device=device))
    assert out.device.type == device and out.item() in (0.0, 1.0)
